import { progressLine, type StudyProgress } from "@rung/coordinator";

/** Live progress: one redrawn line on a TTY, a plain line on change (at most every 2 s) otherwise. */
export function progressPrinter(): { update(p: StudyProgress): void; end(): void } {
  const tty = process.stdout.isTTY === true;
  let last = "";
  let lastAt = 0;
  return {
    update(p) {
      const line = progressLine(p);
      const now = Date.now();
      if (line === last) return;
      if (tty) {
        if (now - lastAt < 250) return;
        process.stdout.write(`\r\x1b[2K${line.slice(0, (process.stdout.columns ?? 120) - 1)}`);
      } else {
        if (now - lastAt < 2000) return;
        process.stdout.write(`${line}\n`);
      }
      last = line;
      lastAt = now;
    },
    end() {
      if (tty && last) process.stdout.write("\n");
      last = "";
    },
  };
}
