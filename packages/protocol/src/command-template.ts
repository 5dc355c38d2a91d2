/**
 * A trial's command is a template like `python train.py --lr {lr} --tag "a b"`. It is split into argv
 * ONCE, shell-style quoting honoured but nothing expanded, and parameters are substituted inside each
 * argument afterwards. A parameter value therefore always stays one argument, whatever it contains
 * (`; rm -rf /`, `$(…)`, spaces): there is no shell anywhere on the path.
 */

export class CommandTemplateError extends Error {
  override name = "CommandTemplateError";
}

export function splitCommand(template: string): string[] {
  const out: string[] = [];
  let cur = "";
  let inWord = false;
  let quote: "'" | '"' | null = null;
  for (let i = 0; i < template.length; i++) {
    const c = template[i] as string;
    if (quote) {
      if (c === quote) quote = null;
      else if (c === "\\" && quote === '"' && i + 1 < template.length && /["\\$`]/.test(template[i + 1] as string)) {
        cur += template[++i];
      } else cur += c;
      continue;
    }
    if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === "\\" && i + 1 < template.length) {
      cur += template[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) out.push(cur);
      cur = "";
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) throw new CommandTemplateError(`command: unclosed ${quote} quote in ${JSON.stringify(template)}`);
  if (inWord) out.push(cur);
  if (out.length === 0)
    throw new CommandTemplateError("command: is empty; give the program to run, e.g. python train.py --lr {lr}");
  return out;
}

const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Names used as `{name}` anywhere in the argv template. */
export function placeholders(argv: readonly string[]): string[] {
  const names = new Set<string>();
  for (const a of argv) for (const m of a.matchAll(PLACEHOLDER)) names.add(m[1] as string);
  return [...names];
}

export function renderArgv(argv: readonly string[], values: Readonly<Record<string, string | number | boolean>>): string[] {
  return argv.map((a) =>
    a.replace(PLACEHOLDER, (_, name: string) => {
      const v = values[name];
      if (v === undefined)
        throw new CommandTemplateError(`command: {${name}} has no value; define it in search.space or scheduler`);
      return String(v);
    }),
  );
}
