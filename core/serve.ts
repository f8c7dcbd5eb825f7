import { readFileSync } from 'node:fs';
import { Codes, ImzError } from '../protocol/errors.ts';
import { readTokenFile } from './auth.ts';
import { type AuthFailure, ImzServer, type ServeOptions } from './server.ts';
import type { ServerTokens } from './server_auth.ts';
import type { SkippedPath } from './tree_scan.ts';

/** Callbacks of a running server. */
export interface ServeHooks {
  onSkip?: (s: SkippedPath) => void;
  onWarning?: (e: Error) => void;
  onAuthFailed?: (f: AuthFailure) => void;
}

/** Token and certificate files named on the command line. */
export interface ServeSecurityFiles {
  tokenFile?: string;
  readOnlyTokenFiles?: string[];
  tlsCert?: string;
  tlsKey?: string;
}

/** Reads the token and certificate files of `imz serve`; IMZ_USAGE when one is missing or unusable. */
export function loadServeSecurity(f: ServeSecurityFiles): { tokens?: ServerTokens; tls?: { cert: string; key: string } } {
  const readWrite = f.tokenFile ? readTokenFile(f.tokenFile) : [];
  const readOnly = (f.readOnlyTokenFiles ?? []).flatMap((file) => readTokenFile(file));
  const both = readWrite.filter((t) => readOnly.includes(t));
  if (both.length > 0) throw new ImzError(Codes.BAD_USAGE, 'cannot use the tokens: the same token is listed as read-write and read-only');
  if (!f.tlsCert !== !f.tlsKey) throw new ImzError(Codes.BAD_USAGE, 'cannot serve over TLS: give both --tls-cert and --tls-key');
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new ImzError(Codes.BAD_USAGE, `cannot read the TLS ${what} ${file}: ${(err as Error).message}`);
    }
  };
  return {
    tokens: readWrite.length + readOnly.length > 0 ? { readWrite, readOnly } : undefined,
    tls: f.tlsCert && f.tlsKey ? { cert: read(f.tlsCert, 'certificate'), key: read(f.tlsKey, 'key') } : undefined,
  };
}

/** A started server. */
export interface RunningServer {
  root: string;
  host: string;
  port: number;
  serverId: string;
  journalLast: number;
  /** SHA-256 fingerprint of the TLS certificate, when serving TLS (clients can pin it). */
  tlsFingerprint?: string;
  server: ImzServer;
  close(): Promise<void>;
}

/** Starts an imz server on opts.dir: scan, journal, watch, listen. */
export async function serve(opts: ServeOptions, hooks: ServeHooks = {}): Promise<RunningServer> {
  const server = new ImzServer(opts);
  if (hooks.onSkip) server.on('skipped', hooks.onSkip);
  server.on('warning', (e: Error) => hooks.onWarning?.(e));
  server.on('auth-failed', (f: AuthFailure) => hooks.onAuthFailed?.(f));
  const { host, port, tlsFingerprint } = await server.start();
  return {
    root: server.root, host, port, serverId: server.state.id, journalLast: server.state.lastSeq, tlsFingerprint, server,
    close: () => server.close(),
  };
}
