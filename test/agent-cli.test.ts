import { mkdtempSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO, RUNG_BIN, rung, uniquePrefix } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/**
 * Issue 13, item 11 (the agent's part): `rung agent` prints readable lines on a terminal and JSON when
 * piped or with `--log-format json`; a bad count names the bad value. Through the built CLI; the
 * terminal is a real pseudo-terminal (node-pty, as the agent itself uses for trials).
 */

const it = meshTest.extend("leakGraceMs", 5000);

/** The part of node-pty used here. */
interface Pty {
  spawn(
    file: string,
    args: string[],
    o: { name: string; cols: number; rows: number; cwd: string; env: Record<string, string> },
  ): { onData(f: (d: string) => void): void; onExit(f: (e: { exitCode: number }) => void): void };
}
// node-pty is the agent's dependency, not the workspace root's: load it as the agent does.
const pty = createRequire(join(REPO, "packages", "agent", "package.json"))("node-pty") as Pty;

/** `rung ARGS` in a pseudo-terminal until it exits (its own --idle-exit); returns what the terminal showed. */
function inTerminal(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const term = pty.spawn(process.execPath, [RUNG_BIN, ...args], {
      name: "xterm-256color",
      cols: 200,
      rows: 50,
      cwd: REPO,
      env: { ...process.env, RUNG_LOG_LEVEL: "info" } as Record<string, string>,
    });
    let out = "";
    term.onData((d) => {
      out += d;
    });
    term.onExit(({ exitCode }) => resolve({ code: exitCode, out }));
  });
}

function agentArgs(url: string, name: string, extra: string[] = []): string[] {
  const state = mkdtempSync(join(tmpdir(), "rung-cli-state-"));
  return [
    "agent",
    "--nats",
    url,
    "--prefix",
    uniquePrefix(),
    "--name",
    name,
    "--insecure",
    "--fake-gpus",
    "1",
    "--state-dir",
    state,
    "--idle-exit",
    "1s",
    ...extra,
  ];
}

const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");
const plain = (s: string) => s.replace(ANSI, "").replace(/\r/g, "");

describe("rung agent logs", { timeout: 60_000 }, () => {
  it("on a terminal: one readable line per event, not JSON", async ({ nats }) => {
    const { code, out } = await inTerminal(agentArgs(nats.url, "tty"));
    expect(code).toBe(0);
    const lines = plain(out)
      .split("\n")
      .filter((l) => l.trim() !== "");
    expect(lines.length).toBeGreaterThan(2);
    for (const l of lines) expect(l.trimStart().startsWith("{"), l).toBe(false);
    expect(plain(out)).toMatch(/^\d\d:\d\d:\d\d INFO {2}tty {2}agent running {2}.*state=running/m);
    expect(plain(out)).toMatch(/INFO {2}tty {2}no work for the idle-exit period; exiting/);
  });

  it("with --log-format json on a terminal, and whenever piped: JSON lines", async ({ nats }) => {
    const tty = await inTerminal(agentArgs(nats.url, "ttyjson", ["--log-format", "json"]));
    expect(tty.code).toBe(0);
    const jsonLines = plain(tty.out)
      .split("\n")
      .filter((l) => l.trim() !== "");
    for (const l of jsonLines) expect(JSON.parse(l)).toMatchObject({ agent: "ttyjson" });
    expect(jsonLines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toContain("agent running");

    const piped = rung(agentArgs(nats.url, "piped"), { env: { RUNG_LOG_LEVEL: "info" } });
    expect(await piped.exited).toBe(0);
    const lines = piped.stderr().trim().split("\n");
    for (const l of lines) expect(JSON.parse(l)).toMatchObject({ agent: "piped", level: expect.any(Number) });
  });
});

describe("rung agent flags", () => {
  it("names the bad value of a count, in one sentence", async ({ nats }) => {
    const p = rung(["agent", "--nats", nats.url, "--insecure", "--fake-gpus", "two"]);
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toBe('rung: --fake-gpus: must be a whole number from 0 to 64, got "two"\n');
    const slots = rung(["agent", "--nats", nats.url, "--insecure", "--cpu-slots", "1.5"]);
    expect(await slots.exited).toBe(1);
    expect(slots.stderr()).toBe('rung: --cpu-slots: must be a whole number from 0 to 64, got "1.5"\n');
    const format = rung(["agent", "--nats", nats.url, "--insecure", "--fake-gpus", "1", "--log-format", "yaml"]);
    expect(await format.exited).toBe(1);
    expect(format.stderr()).toMatch(/--log-format: must be auto, json or pretty, got "yaml"/);
  });
});
