import { historyCsv, historyJsonLines, historyTable, loadStudyHistory } from "@rung/coordinator";
import type { Command } from "commander";
import { withMesh } from "../connect.js";
import { type NatsFlags, withNatsOptions } from "../nats-options.js";

/** `rung study history NAME [--json | --csv]`: every result of every trial, one per report, then exit. */
export function registerStudyHistory(study: Command): void {
  withNatsOptions(
    study
      .command("history <name>")
      .description("every result every trial reported, one line per report (epoch): to plot in your own notebook")
      .option("--json", "newline-delimited JSON, one object per report")
      .option("--csv", "CSV, one column per metric"),
  ).action(async (name: string, o: NatsFlags & { json?: boolean; csv?: boolean }) => {
    if (o.json && o.csv) throw new Error("--json and --csv: choose one");
    await withMesh(o, "rung-history", async (nc, names) => {
      const { spec, rows } = await loadStudyHistory(nc, names, name);
      process.stdout.write(
        o.json ? historyJsonLines(rows) : o.csv ? historyCsv(rows) : historyTable(rows, spec.scheduler.timeAttr),
      );
    });
  });
}
