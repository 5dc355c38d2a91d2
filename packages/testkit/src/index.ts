// @rung/testkit: real servers and fakes for tests. Test-only; nothing in the product imports it.

export type { FakeGpu, FakeNvidiaSmiState } from "./fake-nvidia-smi.js";
export { FakeNvidiaSmi, fakeGpu } from "./fake-nvidia-smi.js";
export type { LeakCheckOptions } from "./leaks.js";
export { checkLeaks, descendants, LeakError } from "./leaks.js";
export type { TestCluster } from "./nats.js";
export { freePort, startCluster, startNats, TestNats, uniquePrefix, waitForJetStream } from "./nats.js";
export { waitFor } from "./wait.js";
