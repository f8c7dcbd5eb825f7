// The directory the command was started in, read before anything can change
// it: status, push and sync enter the replica's root before their arguments
// are parsed (cli/main.ts), and relative paths among them still mean what the
// user meant.
import { isAbsolute, resolve } from 'node:path';

let _startDir: string | undefined;
try {
  _startDir = process.cwd();
} catch {
  _startDir = undefined; // removed under the shell: relative paths are refused (fromStartDir)
}

/**
 * path resolved against the directory the command started in; undefined
 * for a relative one when that is gone (never resolved against where the
 * command went since: the replica's root, whose files others write).
 */
export function fromStartDir(path: string): string | undefined {
  if (_startDir !== undefined) return resolve(_startDir, path);
  return isAbsolute(path) ? path : undefined;
}

/** The directory the command started in (the working directory, for a command that stays there). */
export function startDir(): string {
  return _startDir ?? process.cwd();
}
