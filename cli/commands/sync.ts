import type { Argv, CommandModule } from 'yargs';
import { ImzError } from '../../protocol/errors.ts';
import { Exit } from '../exit_codes.ts';
import { type GlobalArgs, heldLine } from '../output.ts';
import { enterReplica, run, securityOf } from '../run.ts';
import { followEventPrinter, pullEventPrinter, staleWarning, stopOnSignals } from './progress.ts';
import { pushEventPrinter } from './push_events.ts';

interface SyncArgs extends GlobalArgs {
  policy?: string;
  allowMassDelete: boolean;
  verbose: boolean;
  watch: boolean;
  resync: boolean;
}

/** `imz sync`: pull then push, the command cron and CI call. */
export const syncCommand: CommandModule<GlobalArgs, SyncArgs> = {
  command: 'sync',
  describe: 'pull then push in one run (for cron and CI)',
  builder: (y: Argv<GlobalArgs>) => y
    .option('policy', { type: 'string', describe: 'conflict policy for the push (default from .imz/config)' })
    .option('allow-mass-delete', { type: 'boolean', default: false, describe: 'push even when more than half of the tracked files are deleted' })
    .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'print every change' })
    .option('watch', { type: 'boolean', default: false, describe: 'keep going: push local writes as they happen and follow the server live (Ctrl-C stops)' })
    .option('resync', { type: 'boolean', default: false, describe: 'pull by comparing the whole tree by hash (as pull --resync), then push' })
    .example('imz sync --watch -C ~/tree', 'continuous two-way sync; works offline and catches up when the server returns')
    .example('*/5 * * * * imz sync -C ~/tree --quiet', 'crontab line: exit 3 means conflicts to resolve, 4 the server was away') as unknown as Argv<SyncArgs>,
  handler: (args) => run(args, async (out) => {
    if (args.watch && args.resync) throw new ImzError('IMZ_USAGE', 'cannot sync: --resync is one run, not --watch (run `imz sync --resync`, then `imz sync --watch`)');
    if (args.watch) {
      const { watchSync } = await import('../../core/watch_sync.ts');
      const follows = followEventPrinter(out);
      const pushes = pushEventPrinter(out, true);
      const r = await watchSync(await enterReplica(args), {
        security: securityOf(args),
        policy: args.policy, allowMassDelete: args.allowMassDelete, signal: stopOnSignals(),
        onEvent: (e) => {
          if (e.type === 'pushed') {
            out.event({ event: 'pushed', logged: e.summary.logged, applied: e.summary.applied, conflicts: e.summary.conflicts.length });
            out.line(`pushed ${e.summary.applied} of ${e.summary.logged + e.summary.resent} changes`);
            for (const c of [...e.summary.conflicts, ...e.summary.settled]) pushes({ type: 'conflict', conflict: c });
          } else if (e.type === 'push-offline' || e.type === 'push-error' || e.type === 'watch-degraded') {
            out.event({ event: e.type, message: e.message });
            out.warn(e.message);
          } else follows(e);
        },
      });
      out.event({ event: 'stopped', cursor: r.cursor });
      out.line(`stopped at journal record ${r.cursor}`);
      return Exit.OK;
    }
    const { sync } = await import('../../core/sync.ts');
    const r = await sync(await enterReplica(args), { policy: args.policy, allowMassDelete: args.allowMassDelete, resync: args.resync, security: securityOf(args), onPull: pullEventPrinter(out, args.verbose), onPush: pushEventPrinter(out, args.verbose) });
    out.stopProgress();
    const outstanding = r.outstanding;
    out.event({ event: 'synced', pulled: r.pull.changed, pushed: r.push.applied, conflicts: outstanding, cursor: r.pull.cursor, held: r.push.held, stale: r.pull.stale.length, ...(r.push.taking ? { taking: r.push.taking } : {}) });
    out.line(`pulled ${r.pull.changed} changes, pushed ${r.push.applied} (journal at ${r.pull.cursor})`);
    if (r.push.held > 0) out.line(heldLine(r.push.held, r.push.taking));
    if (r.pull.stale.length > 0) out.warn(staleWarning(r.pull.stale.length));
    if (r.push.rejected > 0) return Exit.FAILED;
    return outstanding > 0 ? Exit.CONFLICTS : Exit.OK;
  }),
};
