// The protocol's numbers (mirrors of the enums in imz.proto), apart from the
// message codec so that code needing only these does not load protobuf.

/** Protocol version spoken by this build. */
export const PROTOCOL_VERSION = 1;

/** Operation numbers (mirror of enum Op in imz.proto). */
export const Op = {
  HELLO: 1, AUTH: 2, STAT: 3, READDIR: 4, READ: 5, JOURNAL: 6, SUBSCRIBE: 7,
  PUT_BLOB: 8, REINTEGRATE: 9, SNAPSHOT: 10, LIST: 11, PING: 12, ERROR: 13, PUT_BLOBS: 14,
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];

/** Entry types (mirror of enum EntryType). */
export const EntryType = { NONE: 0, FILE: 1, DIR: 2, SYMLINK: 3 } as const;
export type EntryTypeCode = (typeof EntryType)[keyof typeof EntryType];

/** What a session may do (mirror of enum Access). */
export const Access = { NONE: 0, READ_ONLY: 1, READ_WRITE: 2 } as const;
export type AccessCode = (typeof Access)[keyof typeof Access];

/** Change kinds (mirror of enum Change). */
export const Change = { CREATE: 1, MODIFY: 2, META: 3, REMOVE: 4, MKDIR: 5, RMDIR: 6, SYMLINK: 7, RETYPE: 8 } as const;
export type ChangeCode = (typeof Change)[keyof typeof Change];

/** Reintegration operation kinds (mirror of enum OpKind). */
export const OpKind = { STORE: 1, MAKEDIR: 2, LINK: 3, UNLINK: 4, REMOVEDIR: 5, SETATTR: 6, MOVE: 7 } as const;
export type OpKindCode = (typeof OpKind)[keyof typeof OpKind];

/** What became of an operation (mirror of enum OpStatus). */
export const OpStatus = { APPLIED: 1, DUPLICATE: 2, SAME: 3, CONFLICT: 4, REJECTED: 5 } as const;
export type OpStatusCode = (typeof OpStatus)[keyof typeof OpStatus];
