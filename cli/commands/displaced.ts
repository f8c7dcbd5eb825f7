import type { Argv, CommandModule } from 'yargs';
import { type GlobalArgs, formatBytes } from '../output.ts';
import { run } from '../run.ts';

interface DisplacedArgs extends GlobalArgs {
  dir: string;
  stateDir?: string;
  restore?: number;
  to?: string;
}

/** `imz displaced DIR`: list or restore versions a client-wins conflict displaced on the server. */
export const displacedCommand: CommandModule<GlobalArgs, DisplacedArgs> = {
  command: 'displaced <dir>',
  describe: 'on the server host: list (or --restore) versions that client-wins/newest conflicts replaced',
  builder: (y: Argv<GlobalArgs>) => y
    .positional('dir', { type: 'string', demandOption: true, describe: 'the served tree' })
    .option('state-dir', { type: 'string', describe: 'server state (default DIR/.imz-server)' })
    .option('restore', { type: 'number', describe: 'put version N (from the list) back at its path; what is there now is displaced in turn' })
    .option('to', { type: 'string', describe: 'with --restore: a path in the tree to restore to instead' })
    .example('imz displaced /srv/data', 'list displaced versions')
    .example('imz displaced /srv/data --restore 3', 'put version 3 back; the running server journals it') as unknown as Argv<DisplacedArgs>,
  handler: (args) => run(args, async (out) => {
    const { listDisplaced, restoreDisplaced } = await import('../../core/displaced.ts');
    if (args.restore !== undefined) {
      const r = await restoreDisplaced(args.dir, args.restore, { stateDir: args.stateDir, to: args.to });
      out.event({ event: 'restored', n: r.from.n, path: r.path, version: r.from.version });
      out.line(`restored ${r.path} (version ${r.from.version}, displaced ${r.from.time})`);
      return 0;
    }
    const all = await listDisplaced(args.dir, args.stateDir);
    for (const d of all) {
      out.event({ event: 'displaced', ...d });
      out.line(`${String(d.n).padStart(4)}  ${d.path}  v${d.version}  ${d.kind}${d.size !== undefined && d.kind === 'file' ? `  ${formatBytes(d.size)}` : ''}${d.target ? `  -> ${d.target}` : ''}  ${d.time}`);
    }
    if (all.length === 0) out.line('no displaced versions');
    return 0;
  }),
};
