import { loadSpec, planStudy, type StudySpec, studyPlanText } from "@rung/coordinator";

/**
 * `rung study run SPEC --dry-run`: checks the spec and prints the planned trials and the rung ladder.
 * Starts nothing and needs no NATS server; a spec error is the same one sentence `study run` gives.
 * Takes the spec's path, or the spec already loaded (and changed by flags such as --samples).
 */
export async function dryRun(spec: string | StudySpec, out: NodeJS.WritableStream): Promise<void> {
  const loaded = typeof spec === "string" ? await loadSpec(spec) : spec;
  out.write(studyPlanText(planStudy(loaded)));
}
