// The directory the command was started in, read before anything can change
// it: `imz status` enters the replica's root before its arguments are parsed
// (cli/main.ts), and relative paths among them still mean what the user meant.
import { resolve } from 'node:path';

let _startDir: string | undefined;
try {
  _startDir = process.cwd();
} catch {
  _startDir = undefined; // removed under the shell: relative paths fail as they would have
}

/** path resolved against the directory the command started in. */
export function fromStartDir(path: string): string {
  return _startDir === undefined ? resolve(path) : resolve(_startDir, path);
}

/** The directory the command started in (the working directory, for a command that stays there). */
export function startDir(): string {
  return _startDir ?? process.cwd();
}
