import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, mkdirSync, rmSync } from "node:fs";
import { lstat, open, readdir } from "node:fs/promises";
import { dirname, isAbsolute, join, normalize, relative, sep } from "node:path";
import { Readable, Transform } from "node:stream";
import { finished, pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import type { ObjectStore } from "@nats-io/obj";
import type { CheckpointRef } from "@rung/protocol";

/**
 * CHECKPOINTS IN THE MESH
 *
 * The contract, for a trial in any language: it writes its checkpoint files into `RUNG_CHECKPOINT_DIR`,
 * then reports a line with `"checkpoint": true` among its metrics. The agent then:
 *
 *   1. packs the directory as it is at that moment into one archive file in its state dir (the trial
 *      runs on; it is not blocked), computing the archive's size and SHA-256 as it writes;
 *   2. stores the archive in the mesh's Object Store bucket under `<study scope>/<trial>/<attempt>/<seq>`;
 *   3. publishes a `checkpoint` event with the reference (object, t, size, digest). The coordinator
 *      folds it only from the attempt's claimant and writes the trial's checkpoint index (the control
 *      bucket, which agents cannot write);
 *
 * and every attempt, on any agent, starts by reading that index and restoring the newest snapshot
 * whose bytes match its reference (size and digest) into an emptied `RUNG_CHECKPOINT_DIR`, with
 * `RUNG_RESUME_FROM=<t>` in the trial's environment. A snapshot that does not match — partial, corrupt,
 * or overwritten by another box — is never unpacked; the one before it is tried.
 *
 * The archive format is Rung's own and trivial, so that any agent unpacks it with nothing installed:
 * the line `rung-checkpoint 1`, then per regular file a JSON line `{"p": path, "s": size, "m": mode}`
 * followed by exactly `s` bytes, then `{"end": true, "files": n}`. Paths are relative, `/`-separated,
 * and an archive with a path that leaves the directory is refused whole. Symbolic links and other
 * special files are left out.
 */

const MAGIC = "rung-checkpoint 1\n";

export class CheckpointTooLargeError extends Error {
  constructor(
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(
      `the checkpoint directory holds more than ${formatBytes(limit)} (--max-checkpoint): not stored; keep fewer or smaller files in RUNG_CHECKPOINT_DIR, or raise the limit`,
    );
    this.name = "CheckpointTooLargeError";
  }
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = -1;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export interface PackedSnapshot {
  file: string;
  size: number;
  digest: string;
  files: number;
}

async function walk(dir: string, base = dir, out: string[] = []): Promise<string[]> {
  let entries: string[];
  try {
    entries = (await readdir(dir)).sort();
  } catch {
    return out;
  }
  for (const name of entries) {
    const p = join(dir, name);
    const st = await lstat(p).catch(() => null);
    if (!st) continue;
    if (st.isDirectory()) await walk(p, base, out);
    else if (st.isFile()) out.push(relative(base, p));
  }
  return out;
}

/** Packs `dir` into `outFile`; throws {@link CheckpointTooLargeError} past `maxBytes` (the file is removed). */
export async function packDirectory(dir: string, outFile: string, maxBytes: number): Promise<PackedSnapshot> {
  mkdirSync(dirname(outFile), { recursive: true });
  const hash = createHash("sha256");
  const out = createWriteStream(outFile);
  let size = 0;
  const put = async (b: Buffer) => {
    size += b.length;
    if (size > maxBytes) throw new CheckpointTooLargeError(size, maxBytes);
    hash.update(b);
    if (!out.write(b)) await new Promise<void>((r) => out.once("drain", () => r()));
  };
  let files = 0;
  try {
    await put(Buffer.from(MAGIC));
    for (const rel of await walk(dir)) {
      const fh = await open(join(dir, rel), "r").catch(() => null);
      if (!fh) continue; // gone since the listing: the trial rewrote it
      try {
        const st = await fh.stat();
        await put(Buffer.from(`${JSON.stringify({ p: rel.split(sep).join("/"), s: st.size, m: st.mode & 0o777 })}\n`));
        // Exactly the size announced, even if the file grows or shrinks while it is read.
        const buf = Buffer.alloc(1024 * 1024);
        let left = st.size;
        while (left > 0) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, left), null);
          if (bytesRead === 0) {
            await put(Buffer.alloc(left));
            break;
          }
          await put(Buffer.from(buf.subarray(0, bytesRead)));
          left -= bytesRead;
        }
        files += 1;
      } finally {
        await fh.close();
      }
    }
    await put(Buffer.from(`${JSON.stringify({ end: true, files })}\n`));
    out.end();
    await finished(out);
  } catch (err) {
    out.destroy();
    rmSync(outFile, { force: true });
    throw err;
  }
  return { file: outFile, size, digest: hash.digest("hex"), files };
}

/** Unpacks an archive made by {@link packDirectory} into `dir` (emptied first). Throws on a malformed archive. */
export async function unpackArchive(file: string, dir: string): Promise<number> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const fh = await open(file, "r");
  try {
    let pos = 0;
    const readLine = async (): Promise<string> => {
      const buf = Buffer.alloc(4096);
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      const nl = buf.subarray(0, bytesRead).indexOf(10);
      if (nl < 0) throw new Error("malformed checkpoint archive: a header line without its end");
      pos += nl + 1;
      return buf.subarray(0, nl).toString("utf8");
    };
    if (`${await readLine()}\n` !== MAGIC) throw new Error("not a Rung checkpoint archive");
    for (;;) {
      const h = JSON.parse(await readLine()) as { p?: string; s?: number; m?: number; end?: boolean; files?: number };
      if (h.end) return h.files ?? 0;
      const rel = h.p ?? "";
      const norm = normalize(rel);
      if (!rel || isAbsolute(rel) || norm.split(sep).includes(".."))
        throw new Error(`malformed checkpoint archive: the path ${JSON.stringify(rel)} leaves the directory`);
      const size = h.s ?? -1;
      if (!Number.isInteger(size) || size < 0) throw new Error("malformed checkpoint archive: a file without a size");
      const target = join(dir, norm);
      mkdirSync(dirname(target), { recursive: true });
      const w = createWriteStream(target, { mode: (h.m ?? 0o644) & 0o777 });
      if (size > 0) await pipeline(createReadStream(file, { start: pos, end: pos + size - 1 }), w);
      else {
        w.end();
        await finished(w);
      }
      pos += size;
    }
  } finally {
    await fh.close();
  }
}

/** What a restore found: the snapshot unpacked, or why it could not be used. */
export type RestoreResult = { ok: true; files: number } | { ok: false; why: string };

/** The mesh's checkpoint bucket, as an agent uses it. */
export class CheckpointStore {
  readonly #os: ObjectStore;

  constructor(os: ObjectStore) {
    this.#os = os;
  }

  /** Stores a packed snapshot under `object`. */
  async upload(object: string, snap: PackedSnapshot): Promise<void> {
    const body = Readable.toWeb(createReadStream(snap.file)) as unknown as ReadableStream<Uint8Array>;
    await this.#os.put({ name: object }, body);
  }

  /**
   * Fetches `ref` into `tmpFile`, checks its size and SHA-256 against the reference, and unpacks it
   * into `dir`. Nothing is unpacked unless every byte matches.
   */
  async restore(ref: CheckpointRef, tmpFile: string, dir: string): Promise<RestoreResult> {
    mkdirSync(dirname(tmpFile), { recursive: true });
    try {
      const r = await this.#os.get(ref.object);
      if (!r) return { ok: false, why: "it is no longer in the mesh" };
      const hash = createHash("sha256");
      let size = 0;
      // One pipeline, so a stream that fails (the store's own digest check, a cut connection) ends the
      // restore with its reason instead of an unhandled error; never more bytes than the record says.
      const count = new Transform({
        transform(chunk: Buffer, _enc, done) {
          size += chunk.length;
          if (size > ref.size) return done(new Error(`it is larger than the ${ref.size} bytes recorded`));
          hash.update(chunk);
          done(null, chunk);
        },
      });
      // The store's own completion (its digest over the chunks) settles apart from the data.
      const settled = r.error.then(
        () => null,
        (err: unknown) => err as Error,
      );
      try {
        await pipeline(Readable.fromWeb(r.data as unknown as WebReadableStream<Uint8Array>), count, createWriteStream(tmpFile));
        const failed = await settled;
        if (failed) throw failed;
      } catch (err) {
        return { ok: false, why: `it could not be read whole (${(err as Error).message.split("\n")[0]})` };
      }
      const digest = hash.digest("hex");
      if (size !== ref.size || digest !== ref.digest)
        return {
          ok: false,
          why: `its bytes do not match the record (${size} bytes, sha256 ${digest.slice(0, 12)}…; recorded ${ref.size} bytes, ${ref.digest.slice(0, 12)}…)`,
        };
      try {
        return { ok: true, files: await unpackArchive(tmpFile, dir) };
      } catch (err) {
        return { ok: false, why: (err as Error).message };
      }
    } catch (err) {
      return { ok: false, why: `the mesh did not answer (${(err as Error).message})` };
    } finally {
      rmSync(tmpFile, { force: true });
    }
  }
}
