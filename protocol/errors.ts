/**
 * The one error class of imz. `code` is stable (callers and the CLI match on
 * it, and it travels on the wire in Error frames); `message` is one line of
 * the form "cannot <action>: <reason>".
 */
export class ImzError extends Error {
  readonly code: string;
  /** Extra facts for --json output and tests; never needed to act on the error. */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ImzError';
    this.code = code;
    this.details = details;
  }
}

/** Stable error codes. */
export const Codes = {
  PROTOCOL: 'IMZ_PROTOCOL',
  FRAME_TOO_LARGE: 'IMZ_FRAME_TOO_LARGE',
  UNREACHABLE: 'IMZ_UNREACHABLE',
  CLOSED: 'IMZ_CLOSED',
  TIMEOUT: 'IMZ_TIMEOUT',
  NOT_FOUND: 'IMZ_NOT_FOUND',
  STALE: 'IMZ_STALE',
  BAD_PATH: 'IMZ_BAD_PATH',
  BAD_USAGE: 'IMZ_USAGE',
  NOT_REPLICA: 'IMZ_NOT_REPLICA',
  NOT_EMPTY: 'IMZ_NOT_EMPTY',
  LOCKED: 'IMZ_LOCKED',
  CONFLICT: 'IMZ_CONFLICT',
  IDENTITY: 'IMZ_SERVER_IDENTITY',
  CURSOR_GONE: 'IMZ_CURSOR_GONE',
  CORRUPT: 'IMZ_CORRUPT',
  HASH_MISMATCH: 'IMZ_HASH_MISMATCH',
  UNSUPPORTED: 'IMZ_UNSUPPORTED',
  IO: 'IMZ_IO',
  NO_SPACE: 'IMZ_NO_SPACE',
  INTERNAL: 'IMZ_INTERNAL',
  AUTH: 'IMZ_AUTH',
  READ_ONLY: 'IMZ_READ_ONLY',
  BUSY: 'IMZ_BUSY',
  TLS: 'IMZ_TLS',
} as const;

/** Wraps any thrown value as an ImzError, keeping an ImzError as it is. */
export function toImzError(err: unknown, action: string): ImzError {
  if (err instanceof ImzError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e && e.code === 'ENOSPC') return new ImzError(Codes.NO_SPACE, `cannot ${action}: the disk is full (free some space and run the command again)`, undefined, { cause: err });
  if (e && (e.code === 'EACCES' || e.code === 'EPERM')) return new ImzError(Codes.IO, `cannot ${action}: permission denied on ${e.path ?? 'a file'}`, undefined, { cause: err });
  const msg = e && typeof e.message === 'string' ? e.message : String(err);
  return new ImzError(Codes.INTERNAL, `cannot ${action}: ${msg}`, undefined, { cause: err });
}

/** Characters never shown as a peer sent them: C0 and C1 controls, DEL, bidirectional overrides. */
// eslint-disable-next-line no-control-regex
export const UNSAFE_TEXT = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/** The first non-blank line of a message (an OpenSSL error spans several), trimmed. */
export function firstLine(s: string): string {
  return s.split('\n').map((l) => l.trim()).filter(Boolean)[0] ?? s.trim();
}
