/**
 * True when two file times (ms) are the same instant as far as the runtimes
 * can tell: within a microsecond (setting a time goes through a double of
 * seconds), or equal to the millisecond when one side only has whole
 * milliseconds (Deno's mtimes), or to the second when one side only has
 * whole seconds (Deno's ctimes). So a replica or server used under both
 * Node and Deno does not see every file as changed.
 */
export function sameMtime(a: number, b: number): boolean {
  if (Math.abs(a - b) < 0.001) return true;
  if (Number.isInteger(a) || Number.isInteger(b)) {
    if (Math.floor(a) === Math.floor(b)) return true;
    if ((a % 1000 === 0 || b % 1000 === 0) && Math.floor(a / 1000) === Math.floor(b / 1000)) return true;
  }
  return false;
}

/** A clock every thread of the process shares and that never steps back (ms). */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}
