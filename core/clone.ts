import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { REPLICA_DIR } from './paths.ts';
import { type PullEvent, type PullSummary, pullWith } from './pull.ts';
import { type SecurityOptions, resolveSecurity, securityToSave } from './credentials.ts';
import { Remote, parseAddress } from './remote.ts';
import { Replica } from './replica.ts';

/** Options of clone. */
export interface CloneOptions {
  /** Fetch the namespace only; content comes with get and cat. */
  onDemand?: boolean;
  /** On-demand: most bytes of fetched content to keep (least recently fetched evicted first). */
  maxCache?: number;
  onEvent?: (e: PullEvent) => void;
  /** Token and TLS settings; clone saves them (never the token itself) for later runs. */
  security?: SecurityOptions;
}

/**
 * Makes a full replica of the server's tree in dir (which must be absent or
 * empty). An interrupted clone leaves HEAD marked `cloning`; running the
 * same clone again resumes it, keeping every file already verified.
 */
export async function clone(address: string, dir: string, opts: CloneOptions = {}): Promise<PullSummary & { dir: string }> {
  parseAddress(address);
  const root = resolve(dir);
  let replica: Replica | undefined;
  let names: string[] = [];
  try {
    if (!(await stat(root)).isDirectory()) throw new ImzError(Codes.NOT_EMPTY, `cannot clone into ${root}: it exists and is not a directory`);
    names = await readdir(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (names.length === 1 && names[0] === REPLICA_DIR && !existsSync(join(root, REPLICA_DIR, 'config'))) {
    // A clone killed before it wrote its config: nothing but our own beginnings, start over.
    await rm(join(root, REPLICA_DIR), { recursive: true, force: true });
    names = [];
  }
  if (names.includes(REPLICA_DIR)) {
    const existing = await Replica.open(root);
    if (!existing.head.cloning) throw new ImzError(Codes.NOT_EMPTY, `cannot clone into ${root}: it is already a replica (run \`imz pull -C ${dir}\` to update it)`);
    if (existing.config.remote !== address) throw new ImzError(Codes.NOT_EMPTY, `cannot clone into ${root}: an unfinished clone of ${existing.config.remote} is there (clone that address again to resume it, or remove the directory)`);
    replica = existing;
  } else if (names.length > 0) {
    throw new ImzError(Codes.NOT_EMPTY, `cannot clone into ${root}: the directory is not empty (choose a new or empty directory)`);
  }
  const remote = await Remote.connect(address, resolveSecurity(opts.security, replica?.config));
  try {
    if (!replica) {
      await mkdir(root, { recursive: true });
      replica = await Replica.init(root, address, opts.onDemand ? 'on-demand' : 'full', { ...securityToSave(opts.security), ...(opts.maxCache ? { maxCache: opts.maxCache } : {}) });
    }
    await replica.lock();
    try {
      await replica.sweepTemps();
      const summary = await pullWith(replica, remote, { onEvent: opts.onEvent });
      return { ...summary, dir: root };
    } finally {
      await replica.unlock();
    }
  } finally {
    remote.close();
  }
}

