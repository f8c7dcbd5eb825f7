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
  readOnlyTokenFile?: string[];
  tlsCert?: string;
  tlsKey?: string;
  maxConnections: number;
  maxConnectionsPerAddress: number;
  handshakeTimeout: number;
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
    .option('insecure', { type: 'boolean', default: false, describe: 'allow a non-loopback --host without tokens (anyone who can connect can read and write the tree)' })
    .option('read-only-token-file', { type: 'string', array: true, requiresArg: true, describe: 'file of read-only tokens, one per line: clone, pull and follow, but no push (repeatable)' })
    .option('tls-cert', { type: 'string', requiresArg: true, describe: 'serve over TLS with this certificate (PEM; needs --tls-key)' })
    .option('tls-key', { type: 'string', requiresArg: true, describe: 'private key of --tls-cert (PEM)' })
    .option('max-connections', { type: 'number', default: 1000, describe: 'most connections at once' })
    .option('max-connections-per-address', { type: 'number', default: 100, describe: 'most connections at once from one address' })
    .option('handshake-timeout', { type: 'number', default: 10, describe: 'seconds a new connection has to finish HELLO (and AUTH)' })
    .option('rescan-interval', { type: 'number', default: 60, describe: 'seconds between full verification scans (0: off)' })
    .example('imz serve /srv/data --port 0 --json', 'serve on a free port; the first line says which')
    .example('imz serve ~/tree --port 7070', 'serve ~/tree on 127.0.0.1:7070')
    .example('imz serve /srv/data --host 0.0.0.0 --token-file rw.tokens --read-only-token-file ro.tokens --tls-cert cert.pem --tls-key key.pem', 'serve the network: tokens required, traffic encrypted') as unknown as Argv<ServeArgs>,
  handler: (args) => run(args, async (out) => {
    // Listen for signals first: a stop asked for during start-up waits for it, then shuts down cleanly.
    const stopped = new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    });
    for (const [name, v] of [['--max-connections', args.maxConnections], ['--max-connections-per-address', args.maxConnectionsPerAddress], ['--handshake-timeout', args.handshakeTimeout]] as const) {
      if (!(v > 0)) {
        const { ImzError } = await import('../../protocol/errors.ts');
        throw new ImzError('IMZ_USAGE', `cannot serve: ${name} must be a positive number, not ${v}`);
      }
    }
    const { serve, loadServeSecurity } = await import('../../core/serve.ts');
    const { isLoopback } = await import('../../core/server.ts');
    const sec = loadServeSecurity({ tokenFile: args.tokenFile, readOnlyTokenFiles: args.readOnlyTokenFile, tlsCert: args.tlsCert, tlsKey: args.tlsKey });
    const tokens = sec.tokens ? sec.tokens.readWrite.length + sec.tokens.readOnly.length : 0;
    if (!isLoopback(args.host)) {
      if (tokens === 0 && args.insecure) out.warn(`INSECURE: serving ${args.host} without tokens; anyone who can reach this port can read and change the tree`);
      else if (tokens > 0 && !sec.tls) out.warn(`serving ${args.host} without TLS: tokens are never sent, but file contents cross the network in clear (add --tls-cert and --tls-key)`);
    }
    const server = await serve({
      dir: args.dir, host: args.host, port: args.port, stateDir: args.stateDir, rescanMs: args.rescanInterval * 1000, insecure: args.insecure,
      tokens: sec.tokens, tls: sec.tls, maxConnections: args.maxConnections, maxConnectionsPerAddress: args.maxConnectionsPerAddress,
      handshakeMs: process.env.IMZ_HANDSHAKE_MS ? undefined : args.handshakeTimeout * 1000,
    }, {
      onSkip: (s) => out.warn(`skipped ${s.path}: ${s.reason}`),
      onWarning: (e) => out.warn(e.message),
      onAuthFailed: (f) => {
        out.warn(`authentication failed from ${f.address}: ${f.reason}${f.blocked ? '; refusing that address for 60 s' : ''}`);
        out.event({ event: 'auth-failed', address: f.address, reason: f.reason, blocked: f.blocked });
      },
    });
    out.event({ event: 'listening', host: server.host, port: server.port, serverId: server.serverId, journalLast: server.journalLast, tls: server.tlsFingerprint !== undefined, tlsFingerprint: server.tlsFingerprint, auth: tokens > 0 });
    out.line(`imz serving ${server.root} on ${server.host}:${server.port} (journal at ${server.journalLast}${tokens > 0 ? `, ${tokens} tokens` : ''}${server.tlsFingerprint ? `, TLS ${server.tlsFingerprint}` : ''})`);
    if (out.quiet && !out.json) process.stdout.write(`${server.host}:${server.port}\n`);
    await stopped;
    await server.close();
    out.event({ event: 'stopped' });
    return 0;
  }),
};
