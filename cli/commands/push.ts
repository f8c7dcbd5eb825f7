import type { Argv, CommandModule } from 'yargs';
import { Exit } from '../exit_codes.ts';
import { type GlobalArgs, formatBytes, heldLine } from '../output.ts';
import { enterReplica, run, securityOf } from '../run.ts';
import { pushEventPrinter } from './push_events.ts';

interface PushArgs extends GlobalArgs {
  policy?: string;
  allowMassDelete: boolean;
  verbose: boolean;
}

/** `imz push`: reintegrate local changes. */
export const pushCommand: CommandModule<GlobalArgs, PushArgs> = {
  command: 'push',
  describe: 'send local changes to the server (logged first, so nothing is lost when it is away)',
  builder: (y: Argv<GlobalArgs>) => y
    .option('policy', { type: 'string', describe: 'conflict policy: manual, server-wins, client-wins, newest, keep-both (default from .imz/config)' })
    .option('allow-mass-delete', { type: 'boolean', default: false, describe: 'push even when more than half of the tracked files are deleted' })
    .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'print every operation' })
    .example('imz push', 'reintegrate what changed here since the last sync')
    .example('imz push --policy server-wins', 'on conflict keep the server\'s version; yours is kept as a conflict copy') as unknown as Argv<PushArgs>,
  handler: (args) => run(args, async (out) => {
    const { push } = await import('../../core/push.ts');
    const r = await push(await enterReplica(args), { policy: args.policy, allowMassDelete: args.allowMassDelete, security: securityOf(args), onEvent: pushEventPrinter(out, args.verbose) });
    out.stopProgress();
    out.event({ event: 'pushed', logged: r.logged, applied: r.applied, conflicts: r.conflicts.length, settled: r.settled.length, rejected: r.rejected, uploadedBytes: r.uploadedBytes, streamed: r.streamed, held: r.held, resent: r.resent, ...(r.taking ? { taking: r.taking } : {}) });
    // (Changes kept back are something to push, later: the held line says why, not "nothing to push" before it.)
    if (r.logged === 0 && r.applied === 0 && r.held === 0) out.line('nothing to push');
    else out.line(`pushed ${r.applied} of ${r.logged + r.resent} changes (${formatBytes(r.uploadedBytes)} uploaded)${r.settled.length ? `, ${r.settled.length} conflicts settled by policy (imz resolve --list)` : ''}`);
    if (r.held > 0) out.line(heldLine(r.held, r.taking));
    if (r.rejected > 0) return Exit.FAILED;
    return r.conflicts.length > 0 || r.held > 0 ? Exit.CONFLICTS : Exit.OK;
  }),
};
