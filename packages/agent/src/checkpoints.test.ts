import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CheckpointTooLargeError, packDirectory, unpackArchive } from "./checkpoints.js";

/** The archive format on its own (the mesh half is test/checkpoints.test.ts). */

function fixture(): string {
  const dir = mkdtempSync(join(tmpdir(), "rung-ckpt-unit-"));
  mkdirSync(join(dir, "sub", "deeper"), { recursive: true });
  writeFileSync(join(dir, "model.pt"), Buffer.alloc(3 * 1024 * 1024 + 17, 7));
  writeFileSync(join(dir, "sub", "state.json"), '{"epoch":3}');
  writeFileSync(join(dir, "sub", "deeper", "empty"), "");
  writeFileSync(join(dir, "run.sh"), "#!/bin/sh\n", { mode: 0o755 });
  symlinkSync("/etc/passwd", join(dir, "link"));
  return dir;
}

describe("checkpoint archives", () => {
  it("pack what is in the directory, with its size and SHA-256, and unpack it byte for byte (links left out)", async () => {
    const dir = fixture();
    const out = join(mkdtempSync(join(tmpdir(), "rung-ckpt-unit-")), "a.rck");
    const snap = await packDirectory(dir, out, 64 * 1024 * 1024);
    expect(snap.files).toBe(4);
    const bytes = readFileSync(out);
    expect(snap.size).toBe(bytes.length);
    expect(snap.digest).toBe(createHash("sha256").update(bytes).digest("hex"));
    const back = join(mkdtempSync(join(tmpdir(), "rung-ckpt-unit-")), "restored");
    mkdirSync(back);
    writeFileSync(join(back, "stale"), "from an older attempt");
    expect(await unpackArchive(out, back)).toBe(4);
    expect(readdirSync(back).sort()).toEqual(["model.pt", "run.sh", "sub"]);
    expect(readFileSync(join(back, "model.pt")).equals(readFileSync(join(dir, "model.pt")))).toBe(true);
    expect(readFileSync(join(back, "sub", "state.json"), "utf8")).toBe('{"epoch":3}');
    expect(readFileSync(join(back, "sub", "deeper", "empty"), "utf8")).toBe("");
    expect(statSync(join(back, "run.sh")).mode & 0o777).toBe(0o755);
  });

  it("refuses a directory over the limit, leaving no partial archive", async () => {
    const dir = fixture();
    const out = join(mkdtempSync(join(tmpdir(), "rung-ckpt-unit-")), "a.rck");
    await expect(packDirectory(dir, out, 1024 * 1024)).rejects.toThrow(CheckpointTooLargeError);
    await expect(packDirectory(dir, out, 1024 * 1024)).rejects.toThrow(/holds more than 1\.0 MiB \(--max-checkpoint\)/);
    expect(readdirSync(join(out, ".."))).toEqual([]);
  });

  it("refuses an archive whose paths leave the directory", async () => {
    const tmp = mkdtempSync(join(tmpdir(), "rung-ckpt-unit-"));
    const evil = join(tmp, "evil.rck");
    writeFileSync(
      evil,
      `rung-checkpoint 1\n${JSON.stringify({ p: "../escaped", s: 2, m: 420 })}\nhi${JSON.stringify({ end: true, files: 1 })}\n`,
    );
    await expect(unpackArchive(evil, join(tmp, "into"))).rejects.toThrow(/leaves the directory/);
    expect(readdirSync(tmp).sort()).toEqual(["evil.rck", "into"]);
    writeFileSync(evil, "not an archive\n");
    await expect(unpackArchive(evil, join(tmp, "into"))).rejects.toThrow(/not a Rung checkpoint archive/);
  });
});
