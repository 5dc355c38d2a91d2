import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type { StudyPageData } from "@rung/coordinator";

/**
 * The web pages' files: the browser code (`packages/cli/assets/ui/`, plain JavaScript the browser
 * runs as it is: no bundler) and uPlot's, read once from disk. `rung ui` serves them; the HTML report
 * inlines them, with the data, into one file that opens from disk with no network.
 */

const ASSETS = fileURLToPath(new URL("../../assets/ui/", import.meta.url));
const require = createRequire(import.meta.url);

export interface Asset {
  readonly body: Buffer;
  readonly type: string;
}

let cache: Map<string, Asset> | undefined;

/** The files `rung ui` serves under `/assets/`. */
export function assets(): Map<string, Asset> {
  if (cache) return cache;
  const uplotDir = require.resolve("uplot/dist/uPlot.iife.min.js").replace(/uPlot\.iife\.min\.js$/, "");
  cache = new Map<string, Asset>([
    ["app.js", { body: readFileSync(`${ASSETS}app.js`), type: "text/javascript; charset=utf-8" }],
    ["style.css", { body: readFileSync(`${ASSETS}style.css`), type: "text/css; charset=utf-8" }],
    ["uPlot.min.js", { body: readFileSync(`${uplotDir}uPlot.iife.min.js`), type: "text/javascript; charset=utf-8" }],
    ["uPlot.min.css", { body: readFileSync(`${uplotDir}uPlot.min.css`), type: "text/css; charset=utf-8" }],
  ]);
  return cache;
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** JSON that can sit inside a `<script>` element: no `</script>` or `<!--` can end it early. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, "\\u003c")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

const NAV = `<nav class="top" aria-label="main"><a href="/" class="brand">rung</a><a href="/">studies</a><a href="/mesh">mesh</a><span id="conn" role="status" aria-live="polite"></span></nav>`;

/** A page of `rung ui`: the shell its browser code fills in (`page` and `params` say what it shows). */
export function shellPage(page: string, title: string, params: Record<string, string>, token: string | null): string {
  const q = token ? `?token=${encodeURIComponent(token)}` : "";
  const data = Object.entries(params)
    .map(([k, v]) => ` data-${k}="${escapeHtml(v)}"`)
    .join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<title>${escapeHtml(title)} · rung</title>
<link rel="stylesheet" href="/assets/uPlot.min.css${q}"><link rel="stylesheet" href="/assets/style.css${q}">
</head><body data-page="${escapeHtml(page)}"${data}>
${NAV}
<main id="main"><p class="muted">loading…</p></main>
<script src="/assets/uPlot.min.js${q}"></script><script src="/assets/app.js${q}"></script>
</body></html>
`;
}

/** `rung study report NAME --html`: the study page as one file — styles, scripts and data inline. */
export function reportHtml(data: StudyPageData): string {
  const a = assets();
  const text = (name: string) => (a.get(name) as Asset).body.toString("utf8");
  // A script's text may not contain "</script"; uPlot's and ours do not, but make sure.
  const inline = (js: string) => js.replace(/<\/script/gi, "<\\/script");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>${escapeHtml(data.summary.study)} · rung report</title>
<style>${text("uPlot.min.css")}</style><style>${text("style.css")}</style>
</head><body data-page="study" data-study="${escapeHtml(data.summary.study)}" data-static="1">
<nav class="top" aria-label="main"><span class="brand">rung</span><span>study report · generated ${escapeHtml(data.summary.generatedAt)}</span></nav>
<main id="main"><p class="muted">loading…</p></main>
<script type="application/json" id="rung-data">${scriptJson(data)}</script>
<script>${inline(text("uPlot.min.js"))}</script><script>${inline(text("app.js"))}</script>
</body></html>
`;
}
