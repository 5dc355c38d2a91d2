import { execFile, execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createSigningKey, findNatsServer, initAuth } from "@rung/protocol";
import { REPO } from "@rung/testkit";
import { describe, expect, it } from "vitest";

/**
 * deploy/: the bootstrap script against a throwaway root (DESTDIR) with a fake nvidia-smi, never the
 * test machine itself; the systemd unit it installs; the NATS configurations, checked by nats-server.
 */

const SCRIPT = join(REPO, "deploy", "bootstrap-agent.sh");
const UNIT = join(REPO, "deploy", "systemd", "rung-agent.service");
const run = promisify(execFile);
const trust = createSigningKey().publicKey;

function fakeBin(): string {
  const bin = mkdtempSync(join(tmpdir(), "rung-fake-bin-"));
  const smi = join(bin, "nvidia-smi");
  writeFileSync(smi, '#!/bin/sh\necho "0, NVIDIA H100 80GB HBM3, 535.129.03, 81559 MiB"\n');
  chmodSync(smi, 0o755);
  return bin;
}

function bootstrap(destdir: string, args: string[], path = `${fakeBin()}:${process.env.PATH}`) {
  const r = spawnSync("bash", [SCRIPT, ...args], { env: { ...process.env, PATH: path, DESTDIR: destdir }, encoding: "utf8" });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => !d.isDirectory())
    .map((d) => join(d.parentPath, d.name).slice(dir.length));
}

describe("deploy/bootstrap-agent.sh", () => {
  const creds = join(mkdtempSync(join(tmpdir(), "rung-creds-")), "agent-box1.creds");
  writeFileSync(creds, "# test credentials\nSUAFAKESEEDFORTHETEST\n");
  const args = [
    "--nats",
    "tls://coord.example.com:4222",
    "--creds",
    creds,
    "--trust",
    trust,
    "--name",
    "box1",
    "--price",
    "1.90",
    "--label",
    "zone=eu",
    "--label",
    "spot=yes",
    "--allow-command",
    "python3 train.py",
  ];

  it("--dry-run prints what it would write and run, and writes nothing", () => {
    const root = mkdtempSync(join(tmpdir(), "rung-root-"));
    const r = bootstrap(root, [...args, "--dry-run"]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain("NVIDIA H100 80GB HBM3");
    expect(r.out).toContain(`would write: ${root}/etc/rung/agent.env (mode 0640)`);
    expect(r.out).toContain(`    | RUNG_NATS_URL="tls://coord.example.com:4222"`);
    expect(r.out).toContain(`    | RUNG_TRUST="${trust}"`);
    expect(r.out).toContain(`    | RUNG_NATS_CREDS="/etc/rung/agent.creds"`);
    expect(r.out).toContain(`    | RUNG_LABELS="zone=eu,spot=yes"`);
    expect(r.out).toContain(`    | RUNG_ALLOW_COMMAND="python3 train.py"`);
    expect(r.out).toContain(`would write: ${root}/etc/rung/agent.creds (mode 0640)`);
    expect(r.out).not.toContain("SUAFAKESEED"); // credentials are never printed
    expect(r.out).toContain(`would write: ${root}/etc/systemd/system/rung-agent.service (mode 0644)`);
    expect(r.out).toContain("    | KillMode=mixed");
    expect(r.out).toMatch(/would run: useradd --system .* rung/);
    expect(r.out).toContain("would run: systemctl enable rung-agent.service");
    expect(filesUnder(root)).toEqual([]);
  });

  it("installs into a throwaway root, and a second run changes nothing", () => {
    const root = mkdtempSync(join(tmpdir(), "rung-root-"));
    const first = bootstrap(root, args);
    expect(first.code, first.out).toBe(0);
    // Commands that would change the test machine are skipped, not run.
    expect(first.out).toContain("skipped (DESTDIR is set): systemctl restart rung-agent.service");
    const env = readFileSync(join(root, "etc/rung/agent.env"), "utf8");
    expect(env).toContain(`RUNG_TRUST="${trust}"`);
    expect(env).toContain('RUNG_PRICE_PER_GPU_HOUR="1.90"');
    expect(env).toContain('RUNG_AGENT_NAME="box1"');
    expect(statSync(join(root, "etc/rung/agent.env")).mode & 0o777).toBe(0o640);
    expect(statSync(join(root, "etc/rung/agent.creds")).mode & 0o777).toBe(0o640);
    expect(readFileSync(join(root, "etc/rung/agent.creds"), "utf8")).toBe(readFileSync(creds, "utf8"));
    expect(readFileSync(join(root, "etc/systemd/system/rung-agent.service"), "utf8")).toBe(readFileSync(UNIT, "utf8"));
    expect(readlinkSync(join(root, "usr/local/bin/rung"))).toBe("/opt/rung/packages/cli/dist/bin.js");
    expect(statSync(join(root, "var/lib/rung/work")).isDirectory()).toBe(true);

    const second = bootstrap(root, args);
    expect(second.code, second.out).toBe(0);
    expect(second.out).not.toMatch(/wrote:|created:|linked:/);
    expect(second.out).toContain(`unchanged: ${root}/etc/rung/agent.env`);
    expect(second.out).toContain("skipped (DESTDIR is set): systemctl start rung-agent.service");
  });

  it("refuses without a working nvidia-smi, without --trust, and with a malformed key", () => {
    const root = mkdtempSync(join(tmpdir(), "rung-root-"));
    const noSmi = mkdtempSync(join(tmpdir(), "rung-empty-bin-"));
    const broken = join(noSmi, "nvidia-smi");
    writeFileSync(
      broken,
      "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\nexit 9\n",
    );
    chmodSync(broken, 0o755);
    const r1 = bootstrap(root, [...args, "--dry-run"], `${noSmi}:/usr/bin:/bin`);
    expect(r1.code).toBe(1);
    expect(r1.out).toMatch(/nvidia-smi failed, so the NVIDIA driver is not working/);
    const r2 = bootstrap(root, ["--nats", "nats://x:4222", "--dry-run"]);
    expect(r2.code).toBe(1);
    expect(r2.out).toMatch(/--trust PUBKEY is required/);
    const r3 = bootstrap(root, ["--nats", "nats://x:4222", "--trust", "nope", "--dry-run"]);
    expect(r3.code).toBe(1);
    expect(r3.out).toMatch(/is not an nkey public key/);
    expect(filesUnder(root)).toEqual([]);
  });

  // ./setup installs shellcheck; a machine without it skips this one.
  const hasShellcheck = spawnSync("sh", ["-c", "command -v shellcheck"]).status === 0;
  it.skipIf(!hasShellcheck)("passes shellcheck", async () => {
    await run("shellcheck", ["--shell=bash", SCRIPT]);
  });
});

describe("deploy/systemd/rung-agent.service", () => {
  it("reads /etc/rung/agent.env, restarts on failure, drains on SIGTERM within a timeout, runs as its own user", () => {
    const unit = readFileSync(UNIT, "utf8");
    for (const line of [
      "EnvironmentFile=/etc/rung/agent.env",
      "ExecStart=/usr/local/bin/rung agent",
      "Restart=on-failure",
      "KillSignal=SIGTERM",
      "KillMode=mixed",
      "User=rung",
    ])
      expect(unit).toContain(`\n${line}\n`);
    expect(unit).toMatch(/\nTimeoutStopSec=\d+min\n/);
  });
});

describe("deploy/nats", () => {
  /** Copies a config next to a generated auth.conf and TLS files, paths moved into a temp dir, and asks nats-server -t. */
  function check(conf: string): { code: number | null; out: string } {
    const dir = mkdtempSync(join(tmpdir(), "rung-nats-conf-"));
    initAuth({ dir, prefix: "rung", agents: ["box1"] });
    const tls = join(dir, "tls");
    mkdirSync(tls);
    // A self-signed certificate stands in for the CA and the server's: nats-server -t loads them.
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"].concat([
        "-keyout",
        join(tls, "server-key.pem"),
        "-out",
        join(tls, "server.pem"),
        "-subj",
        "/CN=localhost",
      ]),
      { stdio: "ignore" },
    );
    copyFileSync(join(tls, "server.pem"), join(tls, "ca.pem"));
    const text = readFileSync(conf, "utf8")
      .replaceAll("/etc/rung/tls", tls)
      .replaceAll("/var/lib/rung", join(dir, "var"))
      .replaceAll("/data", join(dir, "data"));
    const file = join(dir, "server.conf");
    writeFileSync(file, text);
    const r = spawnSync(findNatsServer(), ["-t", "-c", file], { encoding: "utf8" });
    return { code: r.status, out: `${r.stdout}${r.stderr}` };
  }

  it("single.conf and the three cluster nodes are valid, with the auth fragment rung auth init writes", () => {
    for (const conf of ["single.conf", "cluster/n1.conf", "cluster/n2.conf", "cluster/n3.conf"]) {
      const r = check(join(REPO, "deploy", "nats", conf));
      expect(r.code, `${conf}: ${r.out}`).toBe(0);
      expect(r.out).toMatch(/is valid/);
    }
    const compose = readFileSync(join(REPO, "deploy", "nats", "cluster", "docker-compose.yml"), "utf8");
    for (const n of ["n1", "n2", "n3"]) {
      expect(compose).toContain(`./${n}.conf:/etc/rung/nats/${n}.conf:ro`);
      expect(existsSync(join(REPO, "deploy", "nats", "cluster", `${n}.conf`))).toBe(true);
    }
  });
});
