import type { Argv, CommandModule } from 'yargs';
import type { GlobalArgs } from '../output.ts';
import { run } from '../run.ts';

interface ServeArgs extends GlobalArgs {
  dir: string;
  host: string;
  port: number;
  stateDir?: string;
  rescanInterval: number;
  insecure: boolean;
}

/** `imz serve DIR`: serve a tree and journal its changes. */
export const serveCommand: CommandModule<GlobalArgs, ServeArgs> = {
  command: 'serve <dir>',
  describe: 'serve DIR: journal every change to it and answer clones and pulls',
  builder: (y: Argv<GlobalArgs>) => y
    .positional('dir', { type: 'string', demandOption: true, describe: 'the tree to serve (the master copy)' })
    .option('host', { type: 'string', default: '127.0.0.1', describe: 'address to listen on' })
    .option('port', { type: 'number', default: 7070, describe: 'TCP port (0 picks a free one)' })
    .option('state-dir', { type: 'string', describe: 'server state (default DIR/.imz-server)' })
    .option('insecure', { type: 'boolean', default: false, describe: 'allow a non-loopback --host without authentication (anyone who can connect can read the tree)' })
    .option('rescan-interval', { type: 'number', default: 60, describe: 'seconds between full verification scans (0: off)' })
    .example('imz serve /srv/data --port 0 --json', 'serve on a free port; the first line says which')
    .example('imz serve ~/tree --port 7070', 'serve ~/tree on 127.0.0.1:7070') as unknown as Argv<ServeArgs>,
  handler: (args) => run(args, async (out) => {
    // Listen for signals first: a stop asked for during start-up waits for it, then shuts down cleanly.
    const stopped = new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    });
    const { serve } = await import('../../core/serve.ts');
    const { isLoopback } = await import('../../core/server.ts');
    if (!isLoopback(args.host)) {
      if (!args.insecure) {
        const { ImzError } = await import('../../protocol/errors.ts');
        throw new ImzError('IMZ_USAGE', `cannot listen on ${args.host}: without authentication imz serves only loopback addresses (use --host 127.0.0.1, or --insecure to expose the tree to anyone who can connect)`);
      }
      out.warn(`INSECURE: serving ${args.host} without authentication; anyone who can reach this port can read the tree`);
    }
    const server = await serve({ dir: args.dir, host: args.host, port: args.port, stateDir: args.stateDir, rescanMs: args.rescanInterval * 1000 }, {
      onSkip: (s) => out.warn(`skipped ${s.path}: ${s.reason}`),
      onWarning: (e) => out.warn(e.message),
    });
    out.event({ event: 'listening', host: server.host, port: server.port, serverId: server.serverId, journalLast: server.journalLast });
    out.line(`imz serving ${server.root} on ${server.host}:${server.port} (journal at ${server.journalLast})`);
    if (out.quiet && !out.json) process.stdout.write(`${server.host}:${server.port}\n`);
    await stopped;
    await server.close();
    out.event({ event: 'stopped' });
    return 0;
  }),
};
