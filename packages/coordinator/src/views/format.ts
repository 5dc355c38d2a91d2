/** Number and parameter formatting shared by every text view. */

/** `-` for no value, `NaN`, integers as they are, others to `digits` significant digits. */
export function fmt(x: number | null, digits = 4): string {
  if (x === null) return "-";
  if (Number.isNaN(x)) return "NaN";
  return Number.isInteger(x) ? String(x) : x.toPrecision(digits);
}

/** `lr=0.00123 batch_size=64`: fractional numbers to 3 significant digits. */
export function paramText(p: Readonly<Record<string, string | number | boolean>>): string {
  return Object.entries(p)
    .map(([k, v]) => `${k}=${typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(3) : v}`)
    .join(" ");
}
