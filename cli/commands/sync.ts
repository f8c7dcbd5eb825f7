import type { Argv, CommandModule } from 'yargs';
import { Exit } from '../exit_codes.ts';
import type { GlobalArgs } from '../output.ts';
import { run, workDir } from '../run.ts';
import { pullEventPrinter } from './progress.ts';
import { pushEventPrinter } from './push_events.ts';

interface SyncArgs extends GlobalArgs {
  policy?: string;
  allowMassDelete: boolean;
  verbose: boolean;
}

/** `imz sync`: pull then push, the command cron and CI call. */
export const syncCommand: CommandModule<GlobalArgs, SyncArgs> = {
  command: 'sync',
  describe: 'pull then push in one run (for cron and CI)',
  builder: (y: Argv<GlobalArgs>) => y
    .option('policy', { type: 'string', describe: 'conflict policy for the push (default from .imz/config)' })
    .option('allow-mass-delete', { type: 'boolean', default: false, describe: 'push even when more than half of the tracked files are deleted' })
    .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'print every change' })
    .example('*/5 * * * * imz sync -C ~/tree --quiet', 'crontab line: exit 3 means conflicts to resolve, 4 the server was away') as unknown as Argv<SyncArgs>,
  handler: (args) => run(args, async (out) => {
    const { sync } = await import('../../core/sync.ts');
    const r = await sync(workDir(args), { policy: args.policy, allowMassDelete: args.allowMassDelete, onPull: pullEventPrinter(out, args.verbose), onPush: pushEventPrinter(out, args.verbose) });
    out.stopProgress();
    const outstanding = r.outstanding;
    out.event({ event: 'synced', pulled: r.pull.changed, pushed: r.push.applied, conflicts: outstanding, cursor: r.pull.cursor });
    out.line(`pulled ${r.pull.changed} changes, pushed ${r.push.applied} (journal at ${r.pull.cursor})`);
    if (r.push.rejected > 0) return Exit.FAILED;
    return outstanding > 0 ? Exit.CONFLICTS : Exit.OK;
  }),
};
