// Pure text rendering: progress line, leaderboard, report text and Markdown, tail lines.

export { fmt, paramText } from "./format.js";
export { historyCsv, historyJsonLines, historyTable } from "./history-text.js";
export { noOutputText } from "./logs-text.js";
export { studyPlanText } from "./plan-text.js";
export { schedulerSettingsText, studyReplayText } from "./replay-text.js";
export { groupFindings, renderReportMarkdown, renderReportText } from "./report-text.js";
export type {
  CurvePoint,
  MeshPageData,
  MeshPageGpu,
  ParamAxisKind,
  StudyPageData,
  StudyPageSummary,
  StudyPageTrial,
  TrialPageAttempt,
  TrialPageData,
  TrialPageEvent,
} from "./study-page.js";
export { curvePoints, meshPageData, STUDY_PAGE_VERSION, studyPageSummary, terminalText, trialPageData } from "./study-page.js";
export { bestText, failuresText, leaderboardTable, lineageText, movesText, progressLine, savingsText } from "./study-text.js";
export type { StudyMeta, TailConnectionEvent, TailFilter, TailViewOptions } from "./tail-text.js";
export { studyMetaFromSpec, TailFormat, TailView } from "./tail-text.js";
