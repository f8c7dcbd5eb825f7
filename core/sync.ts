import { Codes, ImzError } from '../protocol/errors.ts';
import { listConflicts, outstanding } from './conflicts.ts';
import { type PullEvent, type PullSummary, pullWith } from './pull.ts';
import { type PushEvent, type PushSummary, pushWith } from './push.ts';
import { type SecurityOptions, connectReplica } from './credentials.ts';
import type { Remote } from './remote.ts';
import { Replica } from './replica.ts';

/** Options of sync. */
export interface SyncOptions {
  policy?: string;
  /** Token and TLS settings from the command line (over those saved at clone). */
  security?: SecurityOptions;
  allowMassDelete?: boolean;
  /** Compare the whole tree by hash instead of replaying the journal (pull --resync), then push. */
  resync?: boolean;
  onPull?: (e: PullEvent) => void;
  onPush?: (e: PushEvent) => void;
}

/**
 * One round for cron and CI: pull, then push, under one lock and one
 * connection. With the server unreachable, local changes are logged and
 * IMZ_UNREACHABLE is thrown (exit 4).
 */
export async function sync(dir: string, opts: SyncOptions = {}): Promise<{ pull: PullSummary; push: PushSummary; outstanding: number }> {
  const replica = await Replica.open(dir, { rebuildHead: opts.resync === true });
  await replica.lock();
  try {
    await replica.sweepTemps();
    let remote: Remote;
    try {
      remote = await connectReplica(replica, opts.security, { timeoutMs: 5000 });
    } catch (err) {
      if (err instanceof ImzError && err.code === Codes.UNREACHABLE) await pushWith(replica, undefined, { policy: opts.policy, allowMassDelete: opts.allowMassDelete }, err);
      throw err;
    }
    try {
      const pulled = await pullWith(replica, remote, { policy: opts.policy, resync: opts.resync, onEvent: opts.onPull });
      const pushed = await pushWith(replica, remote, { policy: opts.policy, allowMassDelete: opts.allowMassDelete, onEvent: opts.onPush });
      return { pull: pulled, push: pushed, outstanding: outstanding(await listConflicts(replica.stateDir)).length };
    } finally {
      remote.close();
    }
  } finally {
    await replica.unlock();
  }
}
