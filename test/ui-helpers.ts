import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHROMIUM, chromiumOptions, REPO, rung, type TestProcess, waitForOutput } from "@rung/testkit";
import { type BrowserContext, chromium, type Page } from "playwright-core";

/** Debian's Chromium, which ./setup installs; the browser tests skip, saying so, where it is missing. */
export { CHROMIUM } from "@rung/testkit";
export const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM) console.warn(`skipping the browser tests: ${CHROMIUM} is missing (./setup installs Debian's chromium)`);

/** Where screenshots go (looked at before a UI change is called done). */
export const RESULTS = join(REPO, "test-results", "ui");

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** Headless Chromium with a fresh profile and nothing of its own on the network. */
export async function launchBrowser(): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), "rung-chromium-"));
  const context = await chromium.launchPersistentContext(profile, chromiumOptions({ width: 1280, height: 900 }));
  return {
    context,
    close: async () => {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Collects console errors and uncaught exceptions of a page. */
export function consoleErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(e.message));
  return errors;
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(RESULTS, { recursive: true });
  await page.screenshot({ path: join(RESULTS, `${name}.png`), fullPage: true });
}

/** `rung ui --port 0` on the mesh, and its URL once it serves. */
export async function startUi(flags: string[], extra: string[] = []): Promise<{ proc: TestProcess; url: string }> {
  const proc = rung(["ui", "--port", "0", ...extra, ...flags], { stopSignal: "SIGINT" });
  const m = await waitForOutput(proc, /rung ui: (http:\/\/\S+)\n/, 20_000);
  return { proc, url: (m[1] as string).replace(/\/(\?.*)?$/, "") };
}

export function specFile(spec: Record<string, unknown>): string {
  const file = join(mkdtempSync(join(tmpdir(), "rung-spec-")), `${spec.name as string}.json`);
  writeFileSync(file, JSON.stringify(spec));
  return file;
}
