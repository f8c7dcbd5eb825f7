import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Codes, ImzError } from '../protocol/errors.ts';

/** Bytes of each side's HELLO nonce. */
export const NONCE_BYTES = 32;
/** Shortest token accepted: shorter ones could be guessed. */
export const MIN_TOKEN_CHARS = 16;

// One label per direction: a proof computed by one side can never be
// replayed as the other side's (reflection).
const _CLIENT_LABEL = 'imz-auth-1 client\0';
const _SERVER_LABEL = 'imz-auth-1 server\0';

/** A fresh random nonce for HELLO. */
export function newNonce(): Uint8Array {
  return new Uint8Array(randomBytes(NONCE_BYTES));
}

/** The client's AUTH proof: HMAC-SHA256 over both nonces and the server identity, keyed by the token. */
export function clientProof(token: string, serverNonce: Uint8Array, clientNonce: Uint8Array, serverId: string): Uint8Array {
  return _proof(_CLIENT_LABEL, token, serverNonce, clientNonce, serverId);
}

/** The server's answering proof (another label, same inputs). */
export function serverProof(token: string, serverNonce: Uint8Array, clientNonce: Uint8Array, serverId: string): Uint8Array {
  return _proof(_SERVER_LABEL, token, serverNonce, clientNonce, serverId);
}

/** Compares two proofs in constant time (for equal lengths). */
export function sameProof(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.length > 0 && timingSafeEqual(a, b);
}

function _proof(label: string, token: string, serverNonce: Uint8Array, clientNonce: Uint8Array, serverId: string): Uint8Array {
  const h = createHmac('sha256', token);
  h.update(label);
  h.update(serverNonce);
  h.update(clientNonce);
  h.update(serverId);
  return new Uint8Array(h.digest());
}

/**
 * Reads the tokens of a token file: one per line, blank lines and lines
 * starting with '#' ignored, surrounding spaces trimmed. Throws IMZ_USAGE
 * for a missing or empty file or a token shorter than MIN_TOKEN_CHARS.
 */
export function readTokenFile(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ImzError(Codes.BAD_USAGE, `cannot read token file ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  const tokens = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (tokens.length === 0) throw new ImzError(Codes.BAD_USAGE, `cannot use token file ${file}: it holds no token (one per line)`);
  for (const t of tokens) checkToken(t, `token file ${file}`);
  return tokens;
}

/** Throws IMZ_USAGE unless token is long enough to resist guessing. */
export function checkToken(token: string, where: string): string {
  if (token.length < MIN_TOKEN_CHARS) {
    throw new ImzError(Codes.BAD_USAGE, `cannot use the token from ${where}: it is shorter than ${MIN_TOKEN_CHARS} characters (make one with: openssl rand -hex 32)`);
  }
  return token;
}
