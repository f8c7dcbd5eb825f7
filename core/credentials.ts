import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { checkToken, readTokenFile } from './auth.ts';
import { type ConnectOptions, Remote, type Security } from './remote.ts';
import type { Replica, ReplicaConfig } from './replica.ts';

/** What the user said about reaching the server (command line and environment). */
export interface SecurityOptions {
  /** File whose first token is proved to the server. */
  tokenFile?: string;
  /** The token itself (IMZ_TOKEN). */
  token?: string;
  /** Use TLS, trusting the system's certificate authorities. */
  tls?: boolean;
  /** Use TLS, trusting this CA certificate (PEM file). */
  tlsCa?: string;
  /** Use TLS, trusting only a certificate with this SHA-256 fingerprint. */
  tlsFingerprint?: string;
}

/** The settings a replica keeps in .imz/config so that later runs need no flags. */
export type SavedSecurity = Pick<ReplicaConfig, 'tokenFile' | 'tls'>;

/**
 * Resolves what to connect with: command-line settings first, then the
 * token in IMZ_TOKEN, then what the replica saved at clone time.
 */
export function resolveSecurity(user: SecurityOptions = {}, saved: SavedSecurity = {}): Security {
  let token: string | undefined;
  if (user.tokenFile) token = readTokenFile(user.tokenFile)[0];
  else if (user.token) token = checkToken(user.token, 'IMZ_TOKEN');
  else if (saved.tokenFile) token = readTokenFile(saved.tokenFile)[0];
  const ca = user.tlsCa ?? (user.tls || user.tlsFingerprint ? undefined : saved.tls?.ca);
  const fingerprint = user.tlsFingerprint ?? (user.tls || user.tlsCa ? undefined : saved.tls?.fingerprint);
  const useTls = user.tls || ca !== undefined || fingerprint !== undefined || (saved.tls !== undefined && !user.tlsCa && !user.tlsFingerprint);
  return { token, tls: useTls ? { ca: ca ? _readCa(ca) : undefined, fingerprint } : undefined };
}

/** What clone records in .imz/config from the user's settings (paths made absolute; never the token itself). */
export function securityToSave(user: SecurityOptions = {}): SavedSecurity {
  const out: SavedSecurity = {};
  if (user.tokenFile) out.tokenFile = resolve(user.tokenFile);
  if (user.tls || user.tlsCa || user.tlsFingerprint) {
    out.tls = {};
    if (user.tlsCa) out.tls.ca = resolve(user.tlsCa);
    if (user.tlsFingerprint) out.tls.fingerprint = user.tlsFingerprint;
  }
  return out;
}

/** Connects to the replica's server with its saved settings, overridden by the user's. */
export function connectReplica(replica: Replica, user: SecurityOptions | undefined, opts: Omit<ConnectOptions, keyof Security | 'replicaId'> = {}): Promise<Remote> {
  return Remote.connect(replica.config.remote, { ...opts, replicaId: replica.config.replicaId, ...resolveSecurity(user, replica.config) });
}

function _readCa(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ImzError(Codes.BAD_USAGE, `cannot read the TLS CA certificate ${file}: ${(err as Error).message}`);
  }
}
