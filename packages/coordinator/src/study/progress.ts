import type { StudyState } from "./state.js";

/** What `runStudy` reports after every change worth showing (the CLI throttles and prints it). */
export interface StudyProgress {
  study: string;
  state: StudyState;
  planned: number;
  agents: number;
  gpus: number;
  busyGpus: number;
  waitingForAgents: boolean;
  done: boolean;
  /** Spent against the study's budget (`budgetText`); absent without a budget. */
  budget?: string;
}
