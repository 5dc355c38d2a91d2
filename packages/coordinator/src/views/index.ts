// Pure text rendering: progress line, leaderboard, report text and Markdown, tail lines.

export { fmt, paramText } from "./format.js";
export { groupFindings, renderReportMarkdown, renderReportText } from "./report-text.js";
export { bestText, leaderboardTable, progressLine, savingsText } from "./study-text.js";
export type { StudyMeta, TailFilter, TailViewOptions } from "./tail-text.js";
export { studyMetaFromSpec, TailFormat, TailView } from "./tail-text.js";
