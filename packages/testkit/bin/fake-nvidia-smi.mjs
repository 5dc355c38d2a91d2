#!/usr/bin/env node
// A stand-in for nvidia-smi on machines without a GPU. It answers the query form Rung uses, with
// exactly the real tool's CSV:
//   nvidia-smi --query-gpu=index,uuid,utilization.gpu,... --format=csv,noheader,nounits [-lms 1000] [-i 0,2]
// Values come from a JSON state file (--state FILE, or RUNG_FAKE_NVIDIA_SMI_STATE) that tests rewrite
// while it runs; a value may be the literal "[N/A]" or "[Not Supported]", as the real tool prints.
// Also, as the real tool prints them:
//   nvidia-smi --query-compute-apps=pid,used_memory,gpu_uuid --format=csv,noheader,nounits
//   nvidia-smi -L            (GPUs, and under a GPU in MIG mode its instances: "  MIG 1g.10gb     Device  0: (UUID: MIG-…)")
// A process on a MIG instance is listed under --query-compute-apps with its PARENT GPU's UUID, as the
// real tool does; a GPU whose state has `mig` (even empty) reports mig.mode.current "Enabled".
// The processes on the GPUs are the ones registered by test trials (fake-gpu-model.mjs): their memory
// adds up to memory.used, their allotted compute shares to utilization.gpu.
import { readFileSync } from "node:fs";
import { allotted, memoryOn, readProcs } from "./fake-gpu-model.mjs";

const args = process.argv.slice(2);
let statePath = process.env.RUNG_FAKE_NVIDIA_SMI_STATE;
let query;
let format = "";
let loopMs;
let ids;
let appsQuery;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const val = () => (a.includes("=") ? a.slice(a.indexOf("=") + 1) : args[++i]);
  if (a === "--state") statePath = args[++i];
  else if (a.startsWith("--query-gpu")) query = val();
  else if (a.startsWith("--query-compute-apps")) appsQuery = val();
  else if (a.startsWith("--format")) format = val();
  else if (a === "-lms" || a.startsWith("--loop-ms")) loopMs = Number(val());
  else if (a === "-l" || a.startsWith("--loop=")) loopMs = Number(val()) * 1000;
  else if (a === "-i" || a.startsWith("--id")) ids = val().split(",").map(Number);
  else if (a === "-L" || a === "--list-gpus") query = "__list";
  else {
    process.stdout.write(`Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n\n`);
    process.exit(2);
  }
}

function state() {
  if (!statePath) return { gpus: [] };
  return JSON.parse(readFileSync(statePath, "utf8"));
}

// A GPU's registered processes: on the GPU itself, or on any of its MIG instances.
function uuidsOf(g) {
  return Array.isArray(g.mig) && g.mig.length > 0 ? g.mig.map((m) => m.uuid) : [g.uuid];
}
function procMemory(g) {
  if (!statePath) return 0;
  const procs = readProcs(statePath);
  return uuidsOf(g).reduce((s, u) => s + memoryOn(procs, u), 0);
}
function procUtil(g) {
  if (!statePath) return null;
  const procs = readProcs(statePath);
  if (!procs.some((p) => p.gpus.some((x) => x.uuid === g.uuid))) return null;
  let busy = 0;
  for (const share of allotted(procs, g.uuid).values()) busy += share;
  return Math.round(Math.min(1, busy) * 100);
}
const migMode = (g) => Array.isArray(g.mig) && g.mig.length > 0;

const FIELDS = {
  index: (g) => g.index,
  uuid: (g) => g.uuid,
  name: (g) => g.name,
  driver_version: (g) => g.driver ?? "535.129.03",
  "pci.bus_id": (g) => g.pciBusId ?? `00000000:${(0x18 + g.index).toString(16).toUpperCase().padStart(2, "0")}:00.0`,
  count: (_g, all) => all.length,
  "memory.total": (g) => g.memoryTotalMiB,
  "memory.used": (g) => (typeof g.memoryUsedMiB === "number" ? g.memoryUsedMiB + procMemory(g) : g.memoryUsedMiB),
  "memory.free": (g) =>
    typeof g.memoryTotalMiB === "number" && typeof g.memoryUsedMiB === "number"
      ? g.memoryTotalMiB - g.memoryUsedMiB - procMemory(g)
      : "[N/A]",
  // A GPU in MIG mode reports no utilization, as the real one does.
  "utilization.gpu": (g) => (migMode(g) ? "[N/A]" : (procUtil(g) ?? g.utilizationGpu)),
  "utilization.memory": (g) => g.utilizationMemory,
  "power.draw": (g) => (typeof g.powerW === "number" ? g.powerW.toFixed(2) : g.powerW),
  "power.limit": (g) => (typeof g.powerLimitW === "number" ? g.powerLimitW.toFixed(2) : (g.powerLimitW ?? "700.00")),
  "temperature.gpu": (g) => g.temperatureC,
  "clocks.sm": (g) => g.smClockMHz,
  "mig.mode.current": (g) => (Array.isArray(g.mig) ? "Enabled" : "Disabled"),
};

function render(fields, withUnits) {
  const st = state();
  const gpus = (st.gpus ?? []).filter((g) => !ids || ids.includes(g.index));
  return gpus
    .map((g) =>
      fields
        .map((f) => {
          const v = FIELDS[f](g, st.gpus);
          if (v === undefined || v === null) return "[N/A]";
          return withUnits && typeof v === "number" && f.startsWith("memory.") ? `${v} MiB` : String(v);
        })
        .join(", "),
    )
    .join("\n");
}

if (query === "__list") {
  for (const g of state().gpus ?? []) {
    process.stdout.write(`GPU ${g.index}: ${g.name} (UUID: ${g.uuid})\n`);
    if (migMode(g))
      for (const m of g.mig)
        process.stdout.write(`  MIG ${m.profile.padEnd(11)} Device ${String(m.device).padStart(2)}: (UUID: ${m.uuid})\n`);
  }
  process.exit(0);
}
if (appsQuery !== undefined) {
  // The real tool names the parent GPU of a process on a MIG instance, not the instance.
  const parentOf = new Map();
  for (const g of state().gpus ?? []) for (const m of Array.isArray(g.mig) ? g.mig : []) parentOf.set(m.uuid, g.uuid);
  const APP_FIELDS = {
    pid: (p) => p.pid,
    process_name: (p) => p.name ?? "python",
    used_memory: (_p, g) => g.memoryMiB,
    used_gpu_memory: (_p, g) => g.memoryMiB,
    gpu_uuid: (_p, g) => parentOf.get(g.uuid) ?? g.uuid,
  };
  const fields = appsQuery.split(",").map((s) => s.trim());
  const bad = fields.find((f) => !(f in APP_FIELDS));
  if (bad) {
    process.stdout.write(`Field "${bad}" is not a valid field to query.\n\n`);
    process.exit(2);
  }
  const opts = format.split(",");
  if (!opts.includes("noheader"))
    process.stdout.write(
      `${fields.map((f) => (f === "used_memory" || f === "used_gpu_memory" ? "used_gpu_memory [MiB]" : f)).join(", ")}\n`,
    );
  const units = !opts.includes("nounits");
  for (const p of statePath ? readProcs(statePath) : [])
    for (const g of p.gpus)
      process.stdout.write(
        `${fields.map((f) => (units && f.startsWith("used_") ? `${APP_FIELDS[f](p, g)} MiB` : String(APP_FIELDS[f](p, g)))).join(", ")}\n`,
      );
  process.exit(0);
}
if (!query) {
  process.stdout.write("fake nvidia-smi: only --query-gpu is supported\n");
  process.exit(2);
}
const fields = query.split(",").map((s) => s.trim());
const bad = fields.find((f) => !(f in FIELDS));
if (bad) {
  process.stdout.write(`Field "${bad}" is not a valid field to query.\n\n`);
  process.exit(2);
}
const opts = format.split(",");
const header = !opts.includes("noheader");
const units = !opts.includes("nounits");
if (header) process.stdout.write(`${fields.join(", ")}\n`);

let lines = 0;
function tick() {
  const st = state();
  const out = render(fields, units);
  if (out) process.stdout.write(`${out}\n`);
  lines += 1;
  if (st.dieAfterTicks !== undefined && lines >= st.dieAfterTicks) process.exit(st.dieExitCode ?? 15);
}
tick();
if (loopMs) {
  setInterval(tick, loopMs);
  process.on("SIGTERM", () => process.exit(0));
}
