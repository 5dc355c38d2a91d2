import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { resolveExecutable } from "./trial-runner.js";

const dir = mkdtempSync(join(tmpdir(), "rung-trial-runner-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("trial runner", () => {
  it("finds programs the way execvp does", () => {
    expect(resolveExecutable("sh", "/", "/nonexistent:/bin")).toBe("/bin/sh");
    expect(resolveExecutable("no-such-program-xyz", "/", "/bin:/usr/bin")).toBeUndefined();
    expect(resolveExecutable("./nope", dir, undefined)).toBeUndefined();
  });
});
