import { inboxPrefixFor } from "./connect.js";
import type { MeshNames } from "./resources.js";
import { validToken } from "./tokens.js";

/**
 * WHO MAY DO WHAT ON NATS
 *
 * Three roles, each a set of subjects it may publish to and subscribe to (allow lists; everything else
 * is refused by the server). With the default prefix `rung`, streams `RUNG_WORK`, `RUNG_EVENTS`,
 * `RUNG_TELEMETRY`, `RUNG_LOGS` and buckets `rung-agents`, `rung-control`, `rung-studies`, `rung-nonces`
 * (KV streams `KV_<bucket>`):
 *
 *   coordinator  the mesh's owner: publishes work, writes events, control and studies, reads
 *                everything, creates, updates and purges the mesh's streams and buckets.
 *   agent <name> creates what is missing (never updates or deletes), pulls from the work consumers
 *                and acks what it was handed, publishes its own trial events and logs, its own
 *                telemetry (`rung.telemetry.<name>`) and its own advert (`$KV.rung-agents.<name>`),
 *                reads stop decisions, records order nonces (replay protection).
 *   viewer       read-only: stream info, events, telemetry, logs, adverts, stop keys, study records.
 *                Never the work stream (orders carry secret env values) nor the nonces.
 *
 * Replies: every user subscribes to its own inbox prefix only (`_INBOX_<its public key>.>`, which
 * connectNats uses for nkey users), so no one reads another's replies — pull-consumer deliveries,
 * orders included, travel on reply inboxes.
 *
 * Events and logs carry their publisher's name in their subject (subjects.ts): an agent user may publish
 * only `rung.events.<study>.<trial>.a.<its name>` and `rung.logs.<study>.<trial>.<attempt>.<its name>`,
 * the coordinator only `rung.events.<study>.<trial>.c`. Readers trust the subject's name, never the
 * body's, and count an agent's events and logs for an attempt only when that agent holds the attempt's
 * claim (claims.ts), so a box can write nothing about trials it does not run. The work consumers are
 * shared by design, so any agent can pull any order — and then it really runs it.
 *
 * Acks: an agent may not publish `$JS.ACK.…` at all. It answers only the work messages the server
 * delivered to it (`allow_responses`): ack subjects are made of small counters, so any box could
 * otherwise ack, nak or terminate another box's order. The server forgets these answers' permissions
 * when its configuration is reloaded: an order delivered before a reload can no longer be acknowledged,
 * and is handed on when its claim lease runs out (docs/deploy.md says how to add boxes without one).
 * Nonces: by key only (`DIRECT.GET` of one subject), never by sequence, so no box lists them.
 */

export const Role = { coordinator: "coordinator", agent: "agent", viewer: "viewer" } as const;
export type Role = (typeof Role)[keyof typeof Role];

export interface SubjectPermissions {
  publish: string[];
  subscribe: string[];
  /** May answer (publish to the reply subject of) messages delivered to it: this many times, for this long each. */
  responses?: { max: number; expires: string };
}

/**
 * An agent answers its work message with heartbeats (`+WPI`) for as long as the trial runs, then
 * once more: room for a heartbeat a second for thirty years, valid for a year.
 */
export const AGENT_RESPONSES = { max: 1_000_000_000, expires: "8760h" } as const;

export interface RolePermissionOptions {
  /** The user's nkey public key: its inbox prefix is derived from it. */
  publicKey: string;
  /** For agents: the agent name its telemetry and advert are scoped to; null allows any name (a shared agent user). */
  agent?: string | null;
}

const API = "$JS.API";

/** Subjects to read one stream: messages by sequence or subject, and ephemeral (ordered) consumers. */
function readStream(s: string): string[] {
  return [
    `${API}.STREAM.INFO.${s}`,
    `${API}.STREAM.MSG.GET.${s}`,
    `${API}.DIRECT.GET.${s}`,
    `${API}.DIRECT.GET.${s}.>`,
    `${API}.CONSUMER.CREATE.${s}`,
    `${API}.CONSUMER.CREATE.${s}.>`,
    `${API}.CONSUMER.INFO.${s}.*`,
    `${API}.CONSUMER.MSG.NEXT.${s}.*`,
    // Flow control replies of push consumers (KV watches and key listings).
    `$JS.FC.${s}.>`,
  ];
}

function kvStream(bucket: string): string {
  return `KV_${bucket}`;
}

/** The publish and subscribe allow lists of one role in one mesh. */
export function rolePermissions(role: Role, names: MeshNames, o: RolePermissionOptions): SubjectPermissions {
  const p = names.prefix;
  const st = names.streams;
  const b = names.buckets;
  const dataStreams = [st.work, st.events, st.telemetry, st.logs];
  const kvStreams = [b.agents, b.control, b.studies].map(kvStream);
  const nonces = kvStream(names.nonces);
  const checkpoints = `OBJ_${names.checkpoints}`;
  const inbox = `${inboxPrefixFor(o.publicKey)}.>`;
  switch (role) {
    case "coordinator": {
      const all = [...dataStreams, ...kvStreams, nonces, checkpoints];
      return {
        publish: [
          `${API}.INFO`,
          ...all.flatMap((s) => [
            `${API}.STREAM.*.${s}`,
            `${API}.STREAM.MSG.*.${s}`,
            `${API}.DIRECT.GET.${s}`,
            `${API}.DIRECT.GET.${s}.>`,
            `${API}.CONSUMER.*.${s}`,
            `${API}.CONSUMER.*.${s}.>`,
            `${API}.CONSUMER.DURABLE.CREATE.${s}.*`,
            `${API}.CONSUMER.MSG.NEXT.${s}.*`,
            `$JS.ACK.${s}.>`,
            `$JS.FC.${s}.>`,
          ]),
          `${p}.work.>`,
          `${p}.events.*.*.c`,
          `$KV.${b.control}.>`,
          `$KV.${b.studies}.>`,
          `$O.${names.checkpoints}.>`,
        ],
        subscribe: [inbox, `${p}.>`],
      };
    }
    case "agent": {
      const name = o.agent === undefined || o.agent === null ? "*" : validToken(o.agent, "agent name");
      const work = st.work;
      return {
        publish: [
          `${API}.INFO`,
          // Whoever starts first creates the mesh; creating never changes what exists already.
          ...[...dataStreams, ...kvStreams, nonces, checkpoints].flatMap((s) => [
            `${API}.STREAM.INFO.${s}`,
            `${API}.STREAM.CREATE.${s}`,
          ]),
          // The shared work consumers: create or find them, pull. Acks go to the reply subject of what
          // was delivered to this user only (`responses` below), never to a `$JS.ACK` subject it makes up.
          `${API}.CONSUMER.CREATE.${work}.>`,
          `${API}.CONSUMER.DURABLE.CREATE.${work}.*`,
          `${API}.CONSUMER.INFO.${work}.*`,
          `${API}.CONSUMER.MSG.NEXT.${work}.*`,
          // Stop decisions: watch and read the control bucket.
          ...readStream(kvStream(b.control)).filter((s) => !s.startsWith(`${API}.STREAM.INFO.`)),
          // Replay protection: create-only records of the nonces of the orders it runs, read by key
          // only (the last message of one subject), so no box can list the nonces.
          `${API}.DIRECT.GET.${nonces}.$KV.${names.nonces}.>`,
          `$KV.${names.nonces}.>`,
          // Checkpoints: store snapshots (chunks, then the object's description) and read them back.
          ...readStream(checkpoints).filter((s) => !s.startsWith(`${API}.STREAM.INFO.`)),
          `$O.${names.checkpoints}.C.>`,
          `$O.${names.checkpoints}.M.>`,
          `${p}.events.*.*.a.${name}`,
          `${p}.logs.*.*.*.${name}`,
          `${p}.telemetry.${name}`,
          `$KV.${b.agents}.${name}`,
        ],
        subscribe: [inbox],
        responses: { ...AGENT_RESPONSES },
      };
    }
    case "viewer": {
      const readable = [st.events, st.telemetry, st.logs, ...kvStreams, `OBJ_${names.checkpoints}`];
      return {
        publish: [
          `${API}.INFO`,
          // Stream info only (no messages) for the work stream: the one-shot commands check the mesh exists.
          `${API}.STREAM.INFO.${st.work}`,
          ...readable.flatMap(readStream),
        ],
        subscribe: [inbox, `${p}.events.>`, `${p}.telemetry.*`, `${p}.logs.>`],
      };
    }
  }
}

export interface MeshUser {
  /** Shown in the generated config as a comment (`coordinator`, `agent a1`, `viewer`). */
  label: string;
  role: Role;
  publicKey: string;
  /** Agent users: the name they are scoped to, or null for a shared agent user. */
  agent?: string | null;
}

/**
 * The nats-server config fragment for a mesh: one account (JetStream enabled) holding every user
 * with its permissions. Include it from the server config (`include "auth.conf"`).
 */
export function renderAuthConfig(names: MeshNames, users: readonly MeshUser[], account = defaultAccountName(names)): string {
  const q = (s: string) => JSON.stringify(s);
  const list = (xs: string[], indent: string) => `[\n${xs.map((x) => `${indent}  ${q(x)}`).join(",\n")}\n${indent}]`;
  const lines = [
    `# Rung mesh ${q(names.prefix)}: NATS users and what each may do. Written by "rung auth init";`,
    `# include it from the nats-server config (include "auth.conf") and reload the server after a change.`,
    `accounts {`,
    `  ${account}: {`,
    `    jetstream: enabled`,
    `    users: [`,
  ];
  for (const u of users) {
    const perms = rolePermissions(u.role, names, { publicKey: u.publicKey, agent: u.agent });
    lines.push(
      `      # ${u.label}`,
      `      {`,
      `        nkey: ${q(u.publicKey)}`,
      `        permissions: {`,
      `          publish: { allow: ${list(perms.publish, "          ")} }`,
      `          subscribe: { allow: ${list(perms.subscribe, "          ")} }`,
      ...(perms.responses
        ? [`          allow_responses: { max: ${perms.responses.max}, expires: ${q(perms.responses.expires)} }`]
        : []),
      `        }`,
      `      }`,
    );
  }
  lines.push(`    ]`, `  }`, `}`);
  return `${lines.join("\n")}\n`;
}

/** The account the mesh's users live in: the prefix in capitals (`RUNG`). */
export function defaultAccountName(names: MeshNames): string {
  return names.prefix.toUpperCase().replace(/-/g, "_");
}
