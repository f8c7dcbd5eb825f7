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
  http?: number;
  httpHost?: string;
  upstream?: string;
  onDemand: boolean;
  readOnly: boolean;
  upstreamTokenFile?: string;
  upstreamTlsCa?: string;
  upstreamTlsFingerprint?: string;
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
    .option('http', { type: 'number', requiresArg: true, describe: 'also serve a read-only HTTP view of the tree on this port (0 picks a free one)' })
    .option('http-host', { type: 'string', requiresArg: true, describe: 'address of the HTTP view (default 127.0.0.1; it has no authentication: a non-loopback address needs --insecure)' })
    .option('rescan-interval', { type: 'number', default: 60, describe: 'seconds between full verification scans, at least 50 times the last one\'s duration (0: off)' })
    .option('upstream', { type: 'string', requiresArg: true, describe: 'be a mirror of HOST:PORT: DIR becomes its replica, followed live and served here' })
    .option('on-demand', { type: 'boolean', default: false, describe: 'with --upstream: fetch a file\'s content only when a client reads it, then keep it fresh' })
    .option('read-only', { type: 'boolean', default: false, describe: 'refuse every write (with --upstream: writes are otherwise applied here and pushed upstream)' })
    .option('upstream-token-file', { type: 'string', requiresArg: true, describe: 'token for the upstream (or IMZ_TOKEN)' })
    .option('upstream-tls-ca', { type: 'string', requiresArg: true, describe: 'reach the upstream over TLS, trusting this CA certificate' })
    .option('upstream-tls-fingerprint', { type: 'string', requiresArg: true, describe: 'reach the upstream over TLS, trusting only this certificate fingerprint' })
    .example('imz serve /srv/data --port 0 --json', 'serve on a free port; the first line says which')
    .example('imz serve ~/tree --port 7070', 'serve ~/tree on 127.0.0.1:7070')
    .example('imz serve ~/tree --http 8080', 'also browse the tree read-only at http://127.0.0.1:8080/')
    .example('imz serve /srv/mirror --upstream primary:7070 --on-demand --read-only --port 7071', 'a read-only mirror that fetches files when first read')
    .example('imz serve /srv/data --host 0.0.0.0 --token-file rw.tokens --read-only-token-file ro.tokens --tls-cert cert.pem --tls-key key.pem', 'serve the network: tokens required, traffic encrypted') as unknown as Argv<ServeArgs>,
  handler: (args) => run(args, async (out) => {
    // Listen for signals first: a stop asked for during start-up waits for it, then shuts down cleanly.
    const stopped = new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    });
    if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
      const { ImzError } = await import('../../protocol/errors.ts');
      throw new ImzError('IMZ_USAGE', `cannot serve: --port must be a TCP port (0 to 65535), not ${args.port}`);
    }
    for (const [name, v] of [['--max-connections', args.maxConnections], ['--max-connections-per-address', args.maxConnectionsPerAddress], ['--handshake-timeout', args.handshakeTimeout]] as const) {
      if (!(v > 0)) {
        const { ImzError } = await import('../../protocol/errors.ts');
        throw new ImzError('IMZ_USAGE', `cannot serve: ${name} must be a positive number, not ${v}`);
      }
    }
    if (!(args.rescanInterval >= 0 && args.rescanInterval * 1000 <= 2 ** 31 - 1)) {
      const { ImzError } = await import('../../protocol/errors.ts');
      throw new ImzError('IMZ_USAGE', `cannot serve: --rescan-interval must be a number of seconds from 0 (off) to 2147483, not ${args.rescanInterval}`);
    }
    const { serve, loadServeSecurity } = await import('../../core/serve.ts');
    const { isLoopback } = await import('../../core/server.ts');
    const sec = loadServeSecurity({ tokenFile: args.tokenFile, readOnlyTokenFiles: args.readOnlyTokenFile, tlsCert: args.tlsCert, tlsKey: args.tlsKey });
    const tokens = sec.tokens ? sec.tokens.readWrite.length + sec.tokens.readOnly.length : 0;
    const http = args.http;
    const httpHost = args.httpHost ?? '127.0.0.1';
    if (http === undefined && args.httpHost !== undefined) {
      const { ImzError } = await import('../../protocol/errors.ts');
      throw new ImzError('IMZ_USAGE', 'cannot serve HTTP: --http-host needs --http PORT');
    }
    if (http !== undefined) {
      const { ImzError } = await import('../../protocol/errors.ts');
      if (!Number.isInteger(http) || http < 0 || http > 65535) throw new ImzError('IMZ_USAGE', `cannot serve HTTP: --http must be a TCP port (0 to 65535), not ${http}`);
      // The HTTP view has no authentication: tokens do not protect it.
      if (!isLoopback(httpHost) && !args.insecure) {
        throw new ImzError('IMZ_USAGE', `cannot serve HTTP on ${httpHost}: the HTTP view has no authentication, so it listens on loopback addresses only (use --http-host 127.0.0.1, or add --insecure to let anyone who can connect read the tree)`);
      }
      if (!isLoopback(httpHost)) out.warn(`INSECURE: the HTTP view on ${httpHost} has no authentication; anyone who can reach that port can read the whole tree${tokens > 0 ? ' (the tokens protect the imz port only)' : ''}`);
      else if (tokens > 0) out.warn('the HTTP view has no authentication: every local user can read the tree through it (the tokens protect the imz port only)');
    }
    if (!isLoopback(args.host)) {
      if (tokens === 0 && args.insecure) out.warn(`INSECURE: serving ${args.host} without tokens; anyone who can reach this port can read and change the tree`);
      else if (tokens > 0 && !sec.tls) out.warn(`serving ${args.host} without TLS: tokens are never sent, but file contents cross the network in clear (add --tls-cert and --tls-key)`);
    }
    if (args.onDemand && !args.upstream) {
      const { ImzError } = await import('../../protocol/errors.ts');
      throw new ImzError('IMZ_USAGE', 'cannot serve on demand: --on-demand needs --upstream HOST:PORT (a primary server has every file)');
    }
    const serveOpts = {
      dir: args.dir, host: args.host, port: args.port, stateDir: args.stateDir, rescanMs: args.rescanInterval * 1000, insecure: args.insecure,
      tokens: sec.tokens, tls: sec.tls, maxConnections: args.maxConnections, maxConnectionsPerAddress: args.maxConnectionsPerAddress,
      handshakeMs: process.env.IMZ_HANDSHAKE_MS ? undefined : args.handshakeTimeout * 1000, readOnly: args.readOnly,
    };
    const upstreamSecurity = { tokenFile: args.upstreamTokenFile, token: process.env.IMZ_TOKEN || undefined, tlsCa: args.upstreamTlsCa, tlsFingerprint: args.upstreamTlsFingerprint };
    const hooks: Parameters<typeof serve>[1] = {
      onSkip: (s) => out.warn(`skipped ${s.path}: ${s.reason}`),
      onWarning: (e) => out.warn(e.message),
      onAuthFailed: (f) => {
        out.warn(`authentication failed from ${f.address}: ${f.reason}${f.blocked ? '; refusing that address for 60 s' : ''}`);
        out.event({ event: 'auth-failed', address: f.address, reason: f.reason, blocked: f.blocked });
      },
    };
    let listening = false;
    const early: (() => void)[] = [];
    const startMirror = args.upstream ? (await import('../../core/mirror.ts')).startMirror : undefined;
    const server = startMirror
      ? await startMirror(serveOpts, {
        upstream: args.upstream!, onDemand: args.onDemand, readOnly: args.readOnly, upstreamSecurity,
        onUpstream: (e) => {
          // The listening line comes first on stdout: what happens before it waits.
          const say = (f: () => void) => (listening ? f() : early.push(f));
          if (e.type === 'following') say(() => out.event({ event: 'upstream', state: 'following', address: e.address, cursor: e.cursor }));
          else if (e.type === 'disconnected') {
            say(() => out.event({ event: 'upstream', state: 'disconnected', message: e.message, retryInMs: e.retryInMs }));
            out.warn(`upstream ${args.upstream} unreachable (${e.message}); serving what this mirror has, retrying in ${(e.retryInMs / 1000).toFixed(1)} s`);
          } else if (e.type === 'push-error') out.warn(`cannot forward writes upstream: ${e.message}`);
        },
      }, hooks)
      : await serve(serveOpts, hooks);
    let view: import('../../core/http_view.ts').HttpView | undefined;
    if (http !== undefined) {
      const { startHttpView } = await import('../../core/http_view.ts');
      try {
        view = await startHttpView(server.server, { port: http, host: httpHost, insecure: args.insecure, onWarning: (e) => out.warn(e.message) });
      } catch (err) {
        await server.close();
        throw err;
      }
    }
    out.event({ event: 'listening', host: server.host, port: server.port, serverId: server.serverId, journalLast: server.journalLast, tls: server.tlsFingerprint !== undefined, tlsFingerprint: server.tlsFingerprint, auth: tokens > 0, httpHost: view?.host, httpPort: view?.port, upstream: args.upstream, onDemand: args.onDemand || undefined, readOnly: args.readOnly || undefined });
    out.line(`imz serving ${server.root} on ${server.host}:${server.port} (journal at ${server.journalLast}${tokens > 0 ? `, ${tokens} tokens` : ''}${server.tlsFingerprint ? `, TLS ${server.tlsFingerprint}` : ''})`);
    listening = true;
    for (const f of early.splice(0)) f();
    if (view) out.line(`HTTP view (read-only) on http://${view.host.includes(':') ? `[${view.host}]` : view.host}:${view.port}/`);
    if (out.quiet && !out.json) process.stdout.write(`${server.host}:${server.port}\n`);
    await stopped;
    await view?.close();
    await server.close();
    out.event({ event: 'stopped' });
    return 0;
  }),
};
