// @rung/cli: the `rung` command. Thin: parse flags, call the packages' run…() functions, print.
export { buildProgram } from "./program.js";
