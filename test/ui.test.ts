import { mkdtempSync, readFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { rung, rungAgents, stopAll, type TestProcess, uniquePrefix, waitFor } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { consoleErrors, HAVE_CHROMIUM, launchBrowser, screenshot, specFile, startUi } from "./ui-helpers.js";

/**
 * `rung ui` and `rung study report --html` in a real browser (Debian's Chromium, headless, through
 * playwright-core) against a real mesh: agents with simulated GPUs running the curve fixture, the
 * built CLI. The charts say what they drew in data-* attributes (app.js); screenshots go to
 * test-results/ui/.
 */

const QUALITIES = [0.5, 0.9, 0.3, 0.95, 0.2, 0.7];

function curvesSpec(name: string, epochMs: number, qualities = QUALITIES): string {
  return specFile({
    name,
    command: `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs {max_t} --epoch-ms ${epochMs}`,
    metric: { name: "val_acc", mode: "max" },
    search: { algorithm: "grid", seed: 5, space: { quality: { grid: qualities } } },
    scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: 9 },
    max_concurrent: 2,
    retries: 0,
  });
}

// A finished study for the file (the report and outage tests): two agents run it, then stop.
const it = meshTest.extend("leakGraceMs", 8000).extend("done", { scope: "file" }, async ({ nats }) => {
  const prefix = uniquePrefix();
  const flags = ["--nats", nats.url, "--prefix", prefix];
  const agents = rungAgents(nats.url, prefix, 2);
  const run = rung(["study", "run", curvesSpec("curves", 60), ...flags]);
  try {
    await run.exited;
    expect(run.out()).toMatch(/study curves completed/);
  } finally {
    await stopAll([run, ...agents]);
  }
  return { flags, study: "curves" };
});

/** A GET with the headers given as they are (fetch will not send another Host). */
function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** A gauge of rung ui's own /metrics. */
async function gauge(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

const XSS = "<img src=x onerror=alert(1)>";

const attr = (page: import("playwright-core").Page, sel: string, name: string) =>
  page.$eval(sel, (el, n) => el.getAttribute(n), name).then((v) => Number(v ?? "0"));

/**
 * What of the page's content reaches past the window's right edge, outside every container that
 * scrolls sideways (a wide table may sit in one: it is read by scrolling that, not the page).
 */
function cutOff(page: import("playwright-core").Page): Promise<string[]> {
  return page.evaluate(() => {
    const scrolls = (el: Element) =>
      el.scrollWidth > el.clientWidth + 1 && ["auto", "scroll"].includes(getComputedStyle(el).overflowX);
    const out: string[] = [];
    for (const el of document.querySelectorAll("main *, nav *")) {
      if (el.getBoundingClientRect().right <= window.innerWidth + 1) continue;
      let up = el.parentElement;
      while (up && !scrolls(up)) up = up.parentElement;
      if (!up) out.push(`${el.tagName.toLowerCase()} "${(el.textContent ?? "").slice(0, 40)}"`);
    }
    return out;
  });
}

describe.skipIf(!HAVE_CHROMIUM)("rung ui in Chromium", () => {
  it("shows a running study live: a curve per trial, new results without a reload, the trial, the mesh", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix];
    const agents = rungAgents(nats.url, prefix, 2);
    procs.push(...agents);
    const ui = await startUi(flags);
    procs.push(ui.proc);
    const browser = await launchBrowser();
    try {
      // 4 trials, 9 epochs of 400 ms: long enough to watch results arrive.
      const run = rung(["study", "run", curvesSpec("live", 400, [0.5, 0.9, 0.3, 0.95]), ...flags]);
      procs.push(run);
      const page = await browser.context.newPage();
      const errors = consoleErrors(page);
      // Opened before the study has results: the page waits, then fills in as they come.
      await waitFor("the study record", async () => (await fetch(`${ui.url}/api/study/live`)).ok, 20_000);
      await page.goto(`${ui.url}/study/live`);
      await page.waitForSelector("#curves[data-series]", { timeout: 30_000 });
      await waitFor("a first result", async () => (await attr(page, "#curves", "data-points")) > 0, 30_000);
      const before = await attr(page, "#curves", "data-points");
      await waitFor(
        "a new result, pushed without a reload",
        async () => (await attr(page, "#curves", "data-points")) > before,
        30_000,
      );
      await screenshot(page, "study-live");

      // While it runs the mesh shows both agents and a trial on a GPU.
      const mesh = await browser.context.newPage();
      const meshErrors = consoleErrors(mesh);
      await mesh.goto(`${ui.url}/mesh`);
      await mesh.waitForSelector("table.gpus tbody tr");
      const meshText = await mesh.textContent("main");
      expect(meshText).toContain("a1");
      expect(meshText).toContain("a2");
      await waitFor("a trial on a GPU", async () => ((await mesh.textContent("table.gpus")) ?? "").includes("live/t"), 20_000);
      await screenshot(mesh, "mesh");

      expect(await run.exited, run.out()).toBe(0);
      // After the end: one series per trial that reported, one parallel-coordinates line per trial.
      const api = (await (await fetch(`${ui.url}/api/study/live`)).json()) as {
        summary: { state: string; trials: { trial: string; bestValue: number | null }[] };
        points: [string, number, number | null][];
      };
      const reported = new Set(api.points.map((p) => p[0]));
      expect(reported.size).toBe(4);
      await waitFor(
        "the final state on the page",
        async () =>
          ((await page.textContent("header")) ?? "").includes("completed") &&
          (await attr(page, "#curves", "data-points")) === api.points.length,
        20_000,
      );
      expect(await attr(page, "#curves", "data-series")).toBe(reported.size);
      // One chart all along: each push was new data (and new series) on it, never a new chart.
      expect(await attr(page, "#curves", "data-builds")).toBe(1);
      expect(await attr(page, "#parcoords", "data-lines")).toBe(api.summary.trials.filter((t) => t.bestValue !== null).length);
      expect(await page.textContent("table.leaderboard")).toContain("t0004");
      await page.check("#log-scale");
      await waitFor("the log scale", async () => (await page.getAttribute("#curves", "data-log")) === "true");
      expect(await attr(page, "#curves", "data-series")).toBe(reported.size);
      await page.uncheck("#log-scale");
      await screenshot(page, "study");

      // A trial's page: its curve, params, attempts, events and terminal output.
      const trial = await browser.context.newPage();
      const trialErrors = consoleErrors(trial);
      await page.click("table.leaderboard a[href$='/trial/t0004']");
      await page.waitForURL(/\/study\/live\/trial\/t0004$/);
      await trial.goto(`${ui.url}/study/live/trial/t0004`);
      await trial.waitForSelector("#output");
      await waitFor("its output", async () => ((await trial.textContent("#output")) ?? "").includes("epoch 9 val_acc"), 20_000);
      expect(await attr(trial, "#trial-curve", "data-points")).toBe(9);
      expect(await trial.textContent("main")).toContain("quality");
      expect(await trial.textContent("main")).toContain("finished");
      await screenshot(trial, "trial");

      // The studies list, and a study that does not exist.
      const list = await browser.context.newPage();
      const listErrors = consoleErrors(list);
      await list.goto(`${ui.url}/`);
      await list.waitForSelector("table.studies");
      expect(await list.textContent("table.studies")).toContain("live");
      await screenshot(list, "studies");
      // (Its own page: the 404 of the API call is the one console error expected there.)
      const nope = await browser.context.newPage();
      await nope.goto(`${ui.url}/study/nope`);
      await nope.waitForSelector("[role=alert]");
      expect(await nope.textContent("[role=alert]")).toContain("no study named nope in this mesh");
      await screenshot(nope, "not-found");

      // Narrow window: still readable (no horizontal scrolling of the page itself).
      await page.goto(`${ui.url}/study/live`);
      await page.waitForSelector("#curves[data-series]");
      await page.setViewportSize({ width: 420, height: 900 });
      await page.waitForTimeout(400);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      expect(overflow).toBeLessThanOrEqual(1);
      expect(await cutOff(page)).toEqual([]);
      // Each table reads whole at this width: none needs its wrapper scrolled sideways.
      expect(
        await page.$$eval(".table-wrap", (els) =>
          els.filter((e) => e.scrollWidth > e.clientWidth + 1).map((e) => e.getAttribute("aria-label")),
        ),
      ).toEqual([]);
      await screenshot(page, "study-narrow");

      expect([...errors, ...meshErrors, ...trialErrors, ...listErrors]).toEqual([]);
    } finally {
      await browser.close();
    }
  });

  it("shows a parameter value and terminal output that look like HTML as text, on the study and trial pages", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix];
    procs.push(...rungAgents(nats.url, prefix, 1));
    const spec = specFile({
      name: "markup",
      // The value goes to the trial as one argument; it prints it, then reports a short curve.
      command: `sh -c 'echo "$1"; exec ${process.execPath} test/fixtures/curve-trial.mjs --quality 0.5 --epochs 3 --epoch-ms 50' note {note}`,
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", seed: 1, space: { note: { grid: [XSS] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 3 },
      max_concurrent: 1,
      retries: 0,
    });
    const run = rung(["study", "run", spec, ...flags]);
    procs.push(run);
    expect(await run.exited, run.out()).toBe(0);
    const ui = await startUi(flags);
    procs.push(ui.proc);
    const browser = await launchBrowser();
    try {
      const page = await browser.context.newPage();
      const errors = consoleErrors(page);
      const dialogs: string[] = [];
      page.on("dialog", (d) => {
        dialogs.push(d.message());
        void d.dismiss();
      });
      await page.goto(`${ui.url}/study/markup`);
      await page.waitForSelector("table.leaderboard tbody tr");
      expect(await page.textContent("table.leaderboard")).toContain(XSS);
      expect(await page.$$eval("img", (els) => els.length)).toBe(0);

      await page.goto(`${ui.url}/study/markup/trial/t0001`);
      await waitFor("its output", async () => ((await page.textContent("#output")) ?? "").includes(XSS), 20_000);
      expect(await page.textContent("#output")).toContain(XSS);
      expect(await page.$$eval("main td", (els, x) => els.some((e) => e.textContent === x), XSS)).toBe(true);
      expect(await page.$$eval("img", (els) => els.length)).toBe(0);
      await screenshot(page, "trial-markup");
      expect(dialogs).toEqual([]);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });

  it("writes the study page as one HTML file that shows the same plots with networking off", async ({ done, procs }) => {
    const file = join(mkdtempSync(join(tmpdir(), "rung-report-")), "curves.html");
    const report = rung(["study", "report", done.study, "--html", file, ...done.flags]);
    procs.push(report);
    expect(await report.exited, report.out()).toBe(0);
    expect(report.stdout().toString()).toContain(`written to ${file}`);
    const html = readFileSync(file, "utf8");
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href="(?!data:)/);

    const browser = await launchBrowser();
    try {
      await browser.context.setOffline(true);
      const requests: string[] = [];
      await browser.context.route("**/*", (route) => {
        const url = route.request().url();
        if (url.startsWith("file:")) return route.continue();
        requests.push(url);
        return route.abort();
      });
      const page = await browser.context.newPage();
      const errors = consoleErrors(page);
      await page.goto(pathToFileURL(file).href);
      await page.waitForSelector("#curves[data-series]");
      // Six trials, each reported at least its first epoch; all six have a best value.
      expect(await attr(page, "#curves", "data-series")).toBe(6);
      expect(await attr(page, "#parcoords", "data-lines")).toBe(6);
      expect(await page.textContent("table.leaderboard")).toContain("t0004");
      expect(await page.textContent("main")).toContain("Early stopping saved");
      await screenshot(page, "report-html");
      expect(requests).toEqual([]);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });

  it("says when NATS is unreachable, and recovers when it is back", async ({ nats, done, procs }) => {
    const ui = await startUi(done.flags);
    procs.push(ui.proc);
    const browser = await launchBrowser();
    try {
      const page = await browser.context.newPage();
      await page.goto(`${ui.url}/study/${done.study}`);
      await page.waitForSelector("#curves[data-series]");
      nats.signal("SIGKILL");
      await nats.exited;
      await page.waitForSelector("#conn.down", { timeout: 20_000 });
      expect(await page.textContent("#conn")).toMatch(/NATS is unreachable/);
      await screenshot(page, "outage");
      await nats.restart();
      await page.waitForSelector("#conn:not(.down)", { state: "attached", timeout: 30_000 });
      expect(await attr(page, "#curves", "data-series")).toBe(6);
      // A new page loads through the recovered connection.
      await page.goto(`${ui.url}/study/${done.study}`);
      await page.waitForSelector("#curves[data-series='6']", { timeout: 30_000 });
    } finally {
      await browser.close();
      await (ui.proc as TestProcess).stop();
    }
  });
});

describe("rung ui off loopback", () => {
  it("needs the token it printed at start on every request", async ({ nats, procs }) => {
    const ui = await startUi(["--nats", nats.url, "--prefix", uniquePrefix()], ["--host", "0.0.0.0"]);
    procs.push(ui.proc);
    const token = /every request needs the token: (\S+)/.exec(ui.proc.out())?.[1] as string;
    expect(token).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    const port = new URL(ui.url).port;
    const base = `http://127.0.0.1:${port}`;
    const refused = await fetch(`${base}/api/health`);
    expect(refused.status).toBe(401);
    expect(((await refused.json()) as { error: string }).error).toContain("needs its token");
    expect((await fetch(`${base}/api/health?token=wrong`)).status).toBe(401);
    const withQuery = await fetch(`${base}/api/health?token=${token}`);
    expect(withQuery.status).toBe(200);
    // The page sets a cookie, so links work without the token in them; Prometheus sends a bearer token.
    const cookie = (withQuery.headers.get("set-cookie") ?? "").split(";")[0] as string;
    expect((await fetch(`${base}/mesh`, { headers: { cookie } })).status).toBe(200);
    expect((await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    // Writing is refused whatever the token.
    expect((await fetch(`${base}/api/health?token=${token}`, { method: "POST" })).status).toBe(405);
    // The cookie is the port's own; a token of the same length in characters but not in bytes is refused, not a crash.
    expect(cookie.startsWith(`rung_token_${port}=`)).toBe(true);
    const wide = `é${token.slice(1)}`;
    expect((await fetch(`${base}/api/health?token=${encodeURIComponent(wide)}`)).status).toBe(401);
    expect(
      (await fetch(`${base}/api/health`, { headers: { cookie: `rung_token_${port}=${encodeURIComponent(wide)}` } })).status,
    ).toBe(401);
  });

  it("never prints the token from the environment in --help", async ({ procs }) => {
    const help = rung(["ui", "--help"], { env: { RUNG_UI_TOKEN: "sekrit-token-from-env" } });
    procs.push(help);
    expect(await help.exited).toBe(0);
    expect(help.out()).toContain("--token");
    expect(help.out()).not.toContain("sekrit-token-from-env");
  });
});

describe("rung ui's server", () => {
  it("lets a study go when the only browser left while it was still loading", async ({ nats, done, procs }) => {
    const ui = await startUi(done.flags, ["--keep-watch", "1s"]);
    procs.push(ui.proc);
    expect(await gauge(ui.url, "rung_ui_study_watches")).toBe(0);
    // NATS paused: the study cannot load, so the stream's request waits in the load; the tab closes then.
    nats.signal("SIGSTOP");
    const tab = new AbortController();
    try {
      const opened = fetch(`${ui.url}/api/study/${done.study}/stream`, { signal: tab.signal }).catch(() => null);
      await new Promise((r) => setTimeout(r, 500));
      tab.abort();
      await opened;
    } finally {
      nats.signal("SIGCONT");
    }
    await waitFor("the study loaded", async () => (await gauge(ui.url, "rung_ui_study_watches")) === 1, 20_000, 100);
    expect(await gauge(ui.url, "rung_ui_browsers")).toBe(0);
    await waitFor("the study's watch closed", async () => (await gauge(ui.url, "rung_ui_study_watches")) === 0, 10_000, 100);
  });

  it("answers only requests addressed to loopback when it has no token, and says what is wrong with a bad URL", async ({
    nats,
    procs,
  }) => {
    const ui = await startUi(["--nats", nats.url, "--prefix", uniquePrefix()]);
    procs.push(ui.proc);
    const port = new URL(ui.url).port;
    const health = `http://127.0.0.1:${port}/api/health`;
    // DNS rebinding: a page of evil.example whose name now points to 127.0.0.1.
    const rebound = await get(health, { host: `evil.example:${port}` });
    expect(rebound.status).toBe(403);
    expect((JSON.parse(rebound.body) as { error: string }).error).toBe(
      "rung ui on loopback answers only requests for localhost, 127.0.0.1 or [::1]",
    );
    for (const host of [`localhost:${port}`, "127.0.0.1", `127.1.2.3:${port}`, "[::1]:1", "LOCALHOST"])
      expect((await get(health, { host })).status, host).toBe(200);
    // A malformed percent escape is the client's mistake, not the server's.
    for (const path of ["/study/%E0%A4%A", "/api/study/%ZZ", "/study/x/trial/%"]) {
      const res = await get(`http://127.0.0.1:${port}${path}`);
      expect(res.status, path).toBe(400);
    }
  });
});
