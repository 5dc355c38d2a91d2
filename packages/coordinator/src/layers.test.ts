import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// The package's folders are layers: a folder may import only from the folders below it, always through
// their index.ts, and only runtime/ may talk to NATS. This test is the check that keeps it so. Folders
// on one level (scheduling/ and search/) are siblings: neither may import the other.
const LEVELS = [["common"], ["scheduling", "search"], ["study"], ["telemetry"], ["views"], ["runtime"]] as const;
const LAYERS = LEVELS.flat();
const src = dirname(fileURLToPath(import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? sources(join(dir, e.name))
      : e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")
        ? [join(dir, e.name)]
        : [],
  );
}

/** Level of a file: -1 for the package root's own files below every folder (errors.ts), LEVELS.length for index.ts. */
function layerOf(file: string): number {
  const rel = relative(src, file);
  if (rel === "index.ts") return LEVELS.length;
  const top = rel.split("/")[0] as string;
  return rel.includes("/") ? LEVELS.findIndex((level) => (level as readonly string[]).includes(top)) : -1;
}

const files = sources(src).map((file) => {
  const text = readFileSync(file, "utf8");
  const imports = [...text.matchAll(/^(?:import|export)[^;]*?from "([^"]+)";/gms)].map((m) => m[1] as string);
  return { file: relative(src, file), layer: layerOf(file), imports, dir: dirname(file) };
});

describe("coordinator layers", () => {
  it("finds every layer folder with an index.ts", () => {
    for (const l of LAYERS)
      expect(
        files.some((f) => f.file === `${l}/index.ts`),
        l,
      ).toBe(true);
    expect(files.filter((f) => f.layer === -1).map((f) => f.file)).toEqual(["errors.ts"]);
  });

  it("imports only point down, through each folder's index", () => {
    const wrong: string[] = [];
    for (const f of files) {
      for (const spec of f.imports.filter((s) => s.startsWith("."))) {
        const target = resolve(f.dir, spec.replace(/\.js$/, ".ts"));
        const layer = layerOf(target);
        const sameFolder = dirname(target) === f.dir;
        if (sameFolder) continue;
        if (layer >= f.layer) wrong.push(`${f.file} imports ${spec}: not a lower layer`);
        else if (layer >= 0 && !target.endsWith("/index.ts"))
          wrong.push(`${f.file} imports ${spec}: go through the folder's index.ts`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("only runtime/ talks to NATS", () => {
    const talking = files.filter((f) => f.imports.some((s) => s.startsWith("@nats-io/")) && !f.file.startsWith("runtime/"));
    expect(talking.map((f) => f.file)).toEqual([]);
  });
});
