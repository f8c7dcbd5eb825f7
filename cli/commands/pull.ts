import type { Argv, CommandModule } from 'yargs';
import { Exit } from '../exit_codes.ts';
import { type GlobalArgs, formatBytes } from '../output.ts';
import { run, securityOf, workDir } from '../run.ts';
import { followEventPrinter, pullEventPrinter, staleWarning, stopOnSignals } from './progress.ts';

interface PullArgs extends GlobalArgs {
  resync: boolean;
  policy?: string;
  verbose: boolean;
  follow: boolean;
}

/** `imz pull`: replay the server's journal into the replica. */
export const pullCommand: CommandModule<GlobalArgs, PullArgs> = {
  command: 'pull',
  describe: 'replay the server\'s journal since the last pull into the replica',
  builder: (y: Argv<GlobalArgs>) => y
    .option('resync', { type: 'boolean', default: false, describe: 'compare the whole tree by hash (after the server was replaced or its journal trimmed)' })
    .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'print every change' })
    .option('policy', { type: 'string', describe: 'when a server change meets a local one: manual (keep yours, record it), server-wins (yours moves to a conflict copy), client-wins (keep yours, push wins later), newest, keep-both (default from .imz/config)' })
    .option('follow', { type: 'boolean', default: false, describe: 'keep following the server: replay each change as it happens, reconnect when it goes away (Ctrl-C stops)' })
    .example('imz pull', 'catch up the replica in the current directory')
    .example('imz pull -C ~/tree --quiet', 'from cron: silent unless something needs attention')
    .example('imz pull --follow --json', 'stay live: one JSON line per change') as unknown as Argv<PullArgs>,
  handler: (args) => run(args, async (out) => {
    if (args.follow) {
      const { follow } = await import('../../core/follow.ts');
      const r = await follow(workDir(args), { signal: stopOnSignals(), security: securityOf(args), onEvent: followEventPrinter(out), resync: args.resync, policy: args.policy });
      out.event({ event: 'stopped', cursor: r.cursor });
      out.line(`stopped at journal record ${r.cursor}`);
      return Exit.OK;
    }
    const { pull } = await import('../../core/pull.ts');
    const r = await pull(workDir(args), { resync: args.resync, policy: args.policy, security: securityOf(args), onEvent: pullEventPrinter(out, args.verbose) });
    out.stopProgress();
    out.event({ event: 'pulled', changed: r.changed, files: r.files, bytes: r.bytes, records: r.records, cursor: r.cursor, conflicts: r.conflicts.length, outstanding: r.outstanding, stale: r.stale.length, resynced: r.resynced });
    if (r.changed === 0 && r.conflicts.length === 0 && r.stale.length === 0) out.line(`already up to date (journal at ${r.cursor})`);
    else out.line(`pulled ${r.records} records: ${r.changed} changes, ${r.files} files, ${formatBytes(r.bytes)} (journal at ${r.cursor})`);
    if (r.stale.length > 0) out.warn(staleWarning(r.stale.length));
    const open = r.conflicts.filter((c) => !c.resolvedBy).length;
    if (open > 0) out.warn(`${open} new conflicts: local changes were kept and not overwritten`);
    if (r.outstanding > 0) {
      out.warn(`${r.outstanding} conflicts remain (details in .imz/conflicts/)`);
      return Exit.CONFLICTS;
    }
    return Exit.OK;
  }),
};
