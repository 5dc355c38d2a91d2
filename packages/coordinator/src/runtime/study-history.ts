import type { NatsConnection } from "@nats-io/transport-node";
import type { MeshNames } from "@rung/protocol";
import { type HistoryRow, type StudySpec, studyHistory } from "../study/index.js";
import { readStudyEvents } from "./event-reader.js";
import { loadStudy } from "./study-admin.js";

/** `rung study history NAME`: the study's spec and every report its trials made (see study/history.ts). */
export async function loadStudyHistory(
  nc: NatsConnection,
  names: MeshNames,
  study: string,
): Promise<{ spec: StudySpec; rows: HistoryRow[] }> {
  // loadStudy: the spec (for the time attribute), and StudyNotFoundError for a name the mesh lacks.
  const { spec } = await loadStudy(nc, names, study);
  const events = await readStudyEvents(nc, names, study);
  return {
    spec,
    rows: studyHistory(
      events.map((e) => e.event),
      spec.scheduler.timeAttr,
    ),
  };
}
