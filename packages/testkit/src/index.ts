// @rung/testkit: real servers, processes and fakes for tests. Test-only; nothing in the product imports
// it. The vitest fixtures live apart, in @rung/testkit/vitest, so that this root never loads vitest.

export { CHROMIUM, CHROMIUM_ARGS, chromiumOptions } from "./chromium.js";
export type { FakeGpu, FakeMigInstance, FakeNvidiaSmiState } from "./fake-nvidia-smi.js";
export { FakeNvidiaSmi, fakeGpu, fakeMigInstance } from "./fake-nvidia-smi.js";
export type { LeakCheckOptions } from "./leaks.js";
export { checkLeaks, LeakError } from "./leaks.js";
export type { OpenMeshOptions, TestMesh } from "./mesh.js";
export { openMesh } from "./mesh.js";
export type { TestCluster } from "./nats.js";
export { freePort, startCluster, startNats, TestNats, uniquePrefix, waitForJetStream } from "./nats.js";
export type { RungAgentOptions, SpawnOptions, TestProcess } from "./processes.js";
export {
  exitOf,
  pidAlive,
  REPO,
  RUNG_BIN,
  rung,
  rungAgent,
  rungAgents,
  signalPid,
  spawnProcess,
  stopAll,
  waitForOutput,
} from "./processes.js";
export type { ProcInfo, ProcStat } from "./procfs.js";
export { cpuTicks, descendants, listProcesses, procCmdline, procEnv, procPids, procStat } from "./procfs.js";
export { failure, waitFor } from "./wait.js";
