import { rmSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { REPO } from "@rung/testkit";
import { RESULTS_FILE } from "./harness/config.js";
import { readRows, textTable, writeDocs } from "./table.js";

/**
 * Starts each chaos run with an empty results file; at the end prints the table, and with
 * RUNG_CHAOS_WRITE_DOCS=1 writes it into docs/reliability.md.
 */
export function setup(): void {
  rmSync(RESULTS_FILE, { force: true });
}

export function teardown(): void {
  const rows = readRows(RESULTS_FILE);
  if (rows.length === 0) return;
  process.stdout.write(`\nRung chaos suite — ${rows.length} scenario(s)\n\n${textTable(rows)}\n\n`);
  for (const r of rows) for (const n of r.notes) process.stdout.write(`  ${r.scenario}: ${n}\n`);
  if (process.env.RUNG_CHAOS_WRITE_DOCS === "1") {
    const file = join(REPO, "docs", "reliability.md");
    const when = new Date().toISOString().slice(0, 10);
    const meta = `Measured ${when} on ${cpus().length} CPU core(s) (${cpus()[0]?.model.trim() ?? "unknown CPU"}), Node ${process.version}, with \`pnpm test:chaos\`.`;
    writeDocs(file, rows, meta);
    process.stdout.write(`\nwrote the table to ${file}\n`);
  }
}
