import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createUser, fromSeed } from "@nats-io/nkeys";
import { createSigningKey, readSigningKey, seedFromText } from "./order-signing.js";
import { type MeshUser, type Role, renderAuthConfig } from "./permissions.js";
import { MeshNames } from "./resources.js";
import { validToken } from "./tokens.js";

/**
 * `rung auth init`: everything a secured mesh needs, in one directory.
 *
 *   auth.conf                the nats-server fragment: one account, one nkey user per role/agent
 *   coordinator.creds        for `rung study …` (and `rung server`-side admin)
 *   viewer.creds             read-only: `tail`, `logs`, `study status`, `agents`
 *   agent-<name>.creds       one per `--agents` name, scoped to that name's telemetry and advert
 *   agent.creds              a shared agent user (`--agent-template`), for boxes not named in advance
 *   signing.nk               the coordinator's order-signing seed (`rung study run --signing-key`)
 *   signing.pub              its public key, for `rung agent --trust`
 *
 * Secrets (credentials, signing seed) are written with mode 0600. Running it again keeps every key
 * that exists and adds what is missing, so adding an agent is: run it again with the longer list,
 * copy the new credentials to the box, reload the server.
 */

export interface AuthInitOptions {
  /** Where the files go; created (mode 0700) when missing. */
  dir: string;
  /** Mesh prefix. Default `rung`. */
  prefix?: string;
  /** Agent names, one user each. Default none. */
  agents?: readonly string[];
  /** Also write a shared agent user. Default: true when `agents` is empty. */
  agentTemplate?: boolean;
  /** Account name in the server config. Default the prefix in capitals. */
  account?: string;
}

export interface WrittenCredentials {
  label: string;
  role: Role;
  agent: string | null;
  file: string;
  publicKey: string;
  /** False when the file existed and its key was kept. */
  created: boolean;
}

export interface AuthInitResult {
  dir: string;
  config: string;
  /** `new`: no auth.conf was there; `changed`: one was, with other users or permissions (reload the server); `same`. */
  configState: "new" | "changed" | "same";
  credentials: WrittenCredentials[];
  signingKey: { file: string; publicFile: string; publicKey: string; created: boolean };
}

function writeSecret(file: string, text: string): void {
  writeFileSync(file, text, { mode: 0o600 });
  chmodSync(file, 0o600);
}

function userCredentials(dir: string, fileName: string, label: string, role: Role, agent: string | null, prefix: string) {
  const file = join(dir, fileName);
  let seed: string | undefined;
  if (existsSync(file)) {
    const found = seedFromText(readFileSync(file, "utf8"));
    if (found?.startsWith("SU")) seed = found;
  }
  const created = seed === undefined;
  const kp = created ? createUser() : fromSeed(new TextEncoder().encode(seed));
  const publicKey = kp.getPublicKey();
  if (created) {
    seed = new TextDecoder().decode(kp.getSeed());
    writeSecret(
      file,
      [
        `# Rung NATS credentials: ${label} (role ${role}) of mesh "${prefix}". Written by "rung auth init".`,
        `# Public key ${publicKey}. Pass this file with --creds (or RUNG_NATS_CREDS); keep it private.`,
        seed,
        "",
      ].join("\n"),
    );
  } else {
    chmodSync(file, 0o600);
  }
  return { label, role, agent, file, publicKey, created } satisfies WrittenCredentials;
}

export function initAuth(o: AuthInitOptions): AuthInitResult {
  const dir = resolve(o.dir);
  const names = new MeshNames(o.prefix ?? "rung");
  const agents = [...new Set((o.agents ?? []).map((a) => validToken(a.trim(), "agent name")))];
  const template = o.agentTemplate ?? agents.length === 0;
  mkdirSync(dir, { recursive: true, mode: 0o700 });

  const p = names.prefix;
  const credentials: WrittenCredentials[] = [
    userCredentials(dir, "coordinator.creds", "coordinator", "coordinator", null, p),
    userCredentials(dir, "viewer.creds", "viewer", "viewer", null, p),
    ...agents.map((a) => userCredentials(dir, `agent-${a}.creds`, `agent ${a}`, "agent", a, p)),
  ];
  if (template) credentials.push(userCredentials(dir, "agent.creds", "shared agent user (any agent name)", "agent", null, p));

  const signingFile = join(dir, "signing.nk");
  const publicFile = join(dir, "signing.pub");
  let signing: { seed: string; publicKey: string };
  let signingCreated = false;
  if (existsSync(signingFile)) {
    signing = readSigningKey(signingFile);
    chmodSync(signingFile, 0o600);
  } else {
    signing = createSigningKey();
    signingCreated = true;
    writeSecret(
      signingFile,
      [
        `# Rung order-signing key of mesh "${p}": the coordinator signs every work order with it`,
        `# (rung study run --signing-key ${signingFile}). Agents trust its public key: --trust ${signing.publicKey}`,
        "# Keep it private: whoever holds it can run code on every agent that trusts it.",
        signing.seed,
        "",
      ].join("\n"),
    );
  }
  writeFileSync(publicFile, `${signing.publicKey}\n`, { mode: 0o644 });

  const users: MeshUser[] = credentials.map((c) => ({ label: c.label, role: c.role, publicKey: c.publicKey, agent: c.agent }));
  const config = join(dir, "auth.conf");
  // Public keys and permissions only: the server's user may read it.
  const text = renderAuthConfig(names, users, o.account);
  const before = existsSync(config) ? readFileSync(config, "utf8") : null;
  writeFileSync(config, text, { mode: 0o644 });
  return {
    dir,
    config,
    configState: before === null ? "new" : before === text ? "same" : "changed",
    credentials,
    signingKey: { file: signingFile, publicFile, publicKey: signing.publicKey, created: signingCreated },
  };
}
