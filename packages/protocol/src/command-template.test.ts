import { describe, expect, it } from "vitest";
import { CommandTemplateError, placeholders, renderArgv, splitCommand } from "./index.js";

describe("command templates", () => {
  it("splits once, honouring quotes, expanding nothing", () => {
    expect(splitCommand(`python train.py --lr {lr} --tag "a b" 'c $HOME' d\\ e`)).toEqual([
      "python",
      "train.py",
      "--lr",
      "{lr}",
      "--tag",
      "a b",
      "c $HOME",
      "d e",
    ]);
  });

  it("keeps hostile parameter values as one literal argument", () => {
    const argv = splitCommand("python train.py --name {name} --lr={lr}");
    expect(placeholders(argv).sort()).toEqual(["lr", "name"]);
    const out = renderArgv(argv, { name: "x; rm -rf / $(whoami) `id`", lr: "0.1 && echo hi" });
    expect(out).toEqual(["python", "train.py", "--name", "x; rm -rf / $(whoami) `id`", "--lr=0.1 && echo hi"]);
  });

  it("says what is wrong with a bad template", () => {
    expect(() => splitCommand(`python "unclosed`)).toThrow(CommandTemplateError);
    expect(() => splitCommand("   ")).toThrow(/empty/);
    expect(() => renderArgv(["--x", "{missing}"], {})).toThrow(/\{missing\} has no value/);
  });
});
