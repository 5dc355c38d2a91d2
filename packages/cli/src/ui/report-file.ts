import { writeFileSync } from "node:fs";
import type { NatsConnection } from "@nats-io/transport-node";
import { StudyWatch } from "@rung/coordinator";
import type { MeshNames } from "@rung/protocol";
import { reportHtml } from "./pages.js";

/** `rung study report NAME --html FILE`: the study page as `rung ui` shows it now, in one file. */
export async function writeHtmlReport(nc: NatsConnection, names: MeshNames, study: string, file: string): Promise<void> {
  // Read once, not followed: the whole study's telemetry, as `rung study report` diagnoses it.
  const watch = await StudyWatch.open(nc, names, study, { telemetryWindowMs: null, maxTelemetry: Number.MAX_SAFE_INTEGER });
  try {
    const html = reportHtml({ summary: watch.summary(), points: watch.pointsSince(0).points });
    try {
      writeFileSync(file, html);
    } catch (err) {
      throw new Error(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  } finally {
    await watch.close();
  }
}
