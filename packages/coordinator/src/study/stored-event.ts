import type { EventSource, TrialEvent } from "@rung/protocol";

/**
 * A study event as read from the events stream: its stream sequence (the order every reader folds in)
 * and its publisher, from its subject (what `StudyState.apply` checks it against).
 */
export interface StoredEvent {
  seq: number;
  event: TrialEvent;
  from: EventSource;
}
