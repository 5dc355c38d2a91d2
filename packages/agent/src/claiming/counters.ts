/** What the claim loop and its attempts count; the agent adds its own and reports them all on exit. */
export interface ClaimLoopCounters {
  ordersClaimed: number;
  ordersRejected: number;
  ordersReturned: number;
  reports: number;
  malformedReportLines: number;
  droppedReports: number;
  missedHeartbeats: number;
  claimsLost: number;
  /** Snapshots stored in the mesh, and those that could not be (too large, the bucket unreachable). */
  checkpointsStored: number;
  checkpointsFailed: number;
}

export function newClaimLoopCounters(): ClaimLoopCounters {
  return {
    ordersClaimed: 0,
    ordersRejected: 0,
    ordersReturned: 0,
    reports: 0,
    malformedReportLines: 0,
    droppedReports: 0,
    missedHeartbeats: 0,
    claimsLost: 0,
    checkpointsStored: 0,
    checkpointsFailed: 0,
  };
}
