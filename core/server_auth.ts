import { Access, type AccessCode } from '../protocol/messages.ts';
import { NONCE_BYTES, clientProof, sameProof, serverProof } from './auth.ts';

/** Tokens a server accepts, by what they allow. */
export interface ServerTokens {
  readWrite: string[];
  readOnly: string[];
}

/** Failed attempts from one address within the window before it is refused. */
const MAX_FAILURES = 10;
/** The window, and how long an address stays refused once over the limit. */
const FAILURE_WINDOW_MS = 60_000;
/** Addresses remembered at most (a flood of spoofed-looking peers cannot grow it without bound). */
const MAX_TRACKED = 10_000;

/**
 * The server's side of authentication: checks AUTH proofs against every
 * configured token, and limits failed attempts per peer address.
 */
export class ServerAuth {
  private _tokens: { token: string; access: AccessCode }[];
  private _failures = new Map<string, { count: number; since: number; blockedUntil: number }>();

  constructor(tokens?: ServerTokens) {
    this._tokens = [
      ...(tokens?.readWrite ?? []).map((token) => ({ token, access: Access.READ_WRITE as AccessCode })),
      ...(tokens?.readOnly ?? []).map((token) => ({ token, access: Access.READ_ONLY as AccessCode })),
    ];
  }

  /** True when every session must authenticate. */
  get required(): boolean {
    return this._tokens.length > 0;
  }

  /**
   * The access a proof earns and the server's answering proof, or undefined
   * when it matches no token. Every token is tried, so the time taken does
   * not tell which one (if any) came close.
   */
  verify(proof: Uint8Array, serverNonce: Uint8Array, clientNonce: Uint8Array, serverId: string): { access: AccessCode; proof: Uint8Array } | undefined {
    if (clientNonce.length !== NONCE_BYTES || serverNonce.length !== NONCE_BYTES) return undefined;
    let found: { token: string; access: AccessCode } | undefined;
    for (const t of this._tokens) {
      if (sameProof(proof, clientProof(t.token, serverNonce, clientNonce, serverId)) && !found) found = t;
    }
    if (!found) return undefined;
    return { access: found.access, proof: serverProof(found.token, serverNonce, clientNonce, serverId) };
  }

  /** Milliseconds for which address is still refused (0: it may try). */
  blockedFor(address: string, now = Date.now()): number {
    const f = this._failures.get(address);
    return f && f.blockedUntil > now ? f.blockedUntil - now : 0;
  }

  /** Records a failed attempt; true when it puts the address over the limit. */
  recordFailure(address: string, now = Date.now()): boolean {
    let f = this._failures.get(address);
    if (!f || now - f.since > FAILURE_WINDOW_MS) {
      if (!f && this._failures.size >= MAX_TRACKED) this._prune(now);
      f = { count: 0, since: now, blockedUntil: 0 };
      this._failures.set(address, f);
    }
    f.count++;
    if (f.count >= MAX_FAILURES && f.blockedUntil <= now) {
      f.blockedUntil = now + FAILURE_WINDOW_MS;
      return true;
    }
    return false;
  }

  private _prune(now: number): void {
    for (const [a, f] of this._failures) {
      if (now - f.since > FAILURE_WINDOW_MS && f.blockedUntil <= now) this._failures.delete(a);
    }
    // Still full of live entries: forget the oldest rather than grow.
    while (this._failures.size >= MAX_TRACKED) this._failures.delete(this._failures.keys().next().value!);
  }
}
