import type { SecurityOptions } from '../core/credentials.ts';
import { Codes, ImzError } from '../protocol/errors.ts';
import { exitFor } from './exit_codes.ts';
import { type GlobalArgs, Output } from './output.ts';
import { fromStartDir, startDir } from './start_dir.ts';

/**
 * Runs a command body with its Output, turning any error into one clear
 * line and the exit status mapped from its code.
 */
export async function run(args: GlobalArgs, body: (out: Output) => Promise<number | void>): Promise<void> {
  const out = await new Output(args).init();
  try {
    const status = await body(out);
    out.stopProgress();
    process.exitCode = status ?? 0;
  } catch (err) {
    const e = err as { code?: string; message?: string };
    const code = typeof e?.code === 'string' && e.code.startsWith('IMZ_') ? e.code : 'IMZ_INTERNAL';
    let message = e?.message ?? String(err);
    if (code === 'IMZ_INTERNAL' && !message.startsWith('cannot ')) message = `cannot finish: ${message}`;
    out.error(code, message);
    if (process.env.IMZ_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = exitFor(code);
  }
}

/** Token and TLS settings from the global options and IMZ_TOKEN, for core calls that connect. */
export function securityOf(args: GlobalArgs): SecurityOptions {
  return { tokenFile: args.tokenFile, token: process.env.IMZ_TOKEN || undefined, tls: args.tls, tlsCa: args.tlsCa, tlsFingerprint: args.tlsFingerprint };
}

/** The directory a command operates on: -C DIR, or the current one. */
export function workDir(args: GlobalArgs): string {
  return args.C === undefined ? startDir() : _fromStart(args.C);
}

/**
 * workDir for the commands that scan the tree (status, push, sync): the
 * replica's root also becomes the working directory, as `git -C` does, so
 * the scan's lstat calls take paths relative to it. File options are
 * resolved against where the user was first.
 */
export async function enterReplica(args: GlobalArgs): Promise<string> {
  const dir = workDir(args);
  const { replicaRootOf } = await import('../core/replica.ts');
  const root = replicaRootOf(dir);
  if (root === undefined) return dir; // opening it reports that
  if (args.tokenFile !== undefined) args.tokenFile = _fromStart(args.tokenFile);
  if (args.tlsCa !== undefined) args.tlsCa = _fromStart(args.tlsCa);
  try {
    process.chdir(root);
  } catch {
    // Not enterable (no search permission): the scan takes whole paths.
  }
  return root;
}

// A path from the command line, resolved against where the command started (see fromStartDir).
function _fromStart(path: string): string {
  const full = fromStartDir(path);
  if (full === undefined) throw new ImzError(Codes.BAD_USAGE, `cannot use the relative path ${path}: the directory imz was started in no longer exists; give an absolute path`);
  return full;
}
