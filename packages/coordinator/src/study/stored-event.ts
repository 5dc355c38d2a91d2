import type { TrialEvent } from "@rung/protocol";

/** A study event as read from the events stream, with its stream sequence (the order every reader folds in). */
export interface StoredEvent {
  seq: number;
  event: TrialEvent;
}
