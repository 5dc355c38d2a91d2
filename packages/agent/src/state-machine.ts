import { IllegalTransitionError } from "./errors.js";

/**
 * A state that several code paths read together lives in one field, and it moves only along the
 * edges its owner declared. A move along an undeclared edge is a bug in the agent, not a condition to
 * handle: it throws `IllegalTransitionError` at the moment it happens, where the stack still says why,
 * instead of leaving a worker in a state nobody planned for.
 *
 * Used by the agent (`starting → running → draining → stopped | failed`) and by each claimed order's
 * attempt (see `claiming/attempt.ts`).
 */

/** For each state, the states it may move to. A terminal state maps to `[]`. */
export type Transitions<S extends string> = { readonly [From in S]: readonly S[] };

export class StateMachine<S extends string> {
  readonly #machine: string;
  readonly #transitions: Transitions<S>;
  #state: S;

  /** `machine` names the owner in errors (`agent`, `attempt s.t.1`). */
  constructor(machine: string, initial: S, transitions: Transitions<S>) {
    this.#machine = machine;
    this.#state = initial;
    this.#transitions = transitions;
  }

  get state(): S {
    return this.#state;
  }

  /** Whether `to` is a declared edge from the current state. */
  can(to: S): boolean {
    return this.#transitions[this.#state].includes(to);
  }

  /** Moves to `to`; throws {@link IllegalTransitionError} (and stays put) when the edge is not declared. */
  transition(to: S): void {
    if (!this.can(to)) throw new IllegalTransitionError(this.#machine, this.#state, to);
    this.#state = to;
  }
}
