/**
 * Debian's Chromium, as the browser tests and benchmarks drive it (through playwright-core's
 * `launchPersistentContext` with a fresh profile): headless, and nothing of its own on the network —
 * without the background-networking flags it keeps trying hosts a closed machine cannot reach.
 */
export const CHROMIUM = "/usr/bin/chromium";

export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** playwright-core's `launchPersistentContext` options for Debian's Chromium, headless, at this size. */
export function chromiumOptions(viewport: { width: number; height: number }) {
  return { executablePath: CHROMIUM, headless: true, viewport, args: [...CHROMIUM_ARGS] };
}
