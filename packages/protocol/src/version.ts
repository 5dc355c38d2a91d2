/** Rung's version, advertised by agents and recorded with each study. */
export const RUNG_VERSION = "0.1.0";
