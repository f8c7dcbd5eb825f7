import { Buffer } from 'node:buffer';
import { crc32 } from './crc32.ts';

/** A logged operation as stored in .imz/log (hash as hex). */
export interface LoggedOp {
  seq: number;
  kind: number;
  path: string;
  fromPath: string;
  base: number;
  fromBase: number;
  state: { type: number; size: number; mode: number; mtimeMs: number; hash: string; target: string };
  /** The mode of the base version in the index (absent in logs of an older imz: unknown). */
  baseMode?: number;
}

/** One line of the reintegration log. */
export type LogRecord =
  | { t: 'op'; op: LoggedOp }
  /** Operations up to this seq may have reached the server: they are resent as they are, never merged away. */
  | { t: 'sent'; upto: number }
  /** Operations up to this seq are acknowledged. */
  | { t: 'done'; upto: number }
  /** Unsent operations up to this seq were superseded by a newer scan. */
  | { t: 'drop'; upto: number };

export const LOG_HEADER = 'imz-log 1';
const _enc = new TextEncoder();

/** Encodes a record as one checksummed line: "<crc32 hex> <json>\n". */
export function encodeLogRecord(r: LogRecord): string {
  const json = JSON.stringify(r);
  return `${crc32(_enc.encode(json)).toString(16).padStart(8, '0')} ${json}\n`;
}

/**
 * The lines encodeLogRecord gives for records, as UTF-8 bytes, after the
 * log's header line when withHeader: each JSON is written once, straight
 * into the one buffer, and checksummed there (a push of 10,000 new files
 * appends 10,000 records at once).
 */
export function encodeLogRecords(records: LogRecord[], withHeader: boolean): Buffer {
  const jsons = records.map((r) => JSON.stringify(r));
  const head = withHeader ? `${LOG_HEADER}\n` : '';
  let total = Buffer.byteLength(head);
  for (const j of jsons) total += 10 + Buffer.byteLength(j);
  const out = Buffer.allocUnsafe(total); // every byte is written below
  let at = out.write(head, 0);
  for (const j of jsons) {
    const start = at + 9;
    const end = start + out.write(j, start);
    out.write(crc32(out.subarray(start, end)).toString(16).padStart(8, '0'), at, 'latin1');
    out[at + 8] = 0x20;
    out[end] = 0x0a;
    at = end + 1;
  }
  return out;
}

/**
 * Decodes the log text; stops at the first torn or damaged line (a crash
 * mid-append) and says where the intact part ends, in bytes.
 */
export function decodeLog(text: string): { records: LogRecord[]; validBytes: number; validChars: number; torn: boolean } {
  const records: LogRecord[] = [];
  if (!text.startsWith(`${LOG_HEADER}\n`)) return { records, validBytes: 0, validChars: 0, torn: text.length > 0 };
  let off = LOG_HEADER.length + 1;
  let bytes = _enc.encode(text.slice(0, off)).length;
  while (off < text.length) {
    const nl = text.indexOf('\n', off);
    if (nl < 0) break;
    const line = text.slice(off, nl);
    const sp = line.indexOf(' ');
    const json = line.slice(sp + 1);
    if (sp !== 8 || parseInt(line.slice(0, 8), 16) !== crc32(_enc.encode(json))) break;
    let rec: unknown;
    try {
      rec = JSON.parse(json);
    } catch {
      break;
    }
    // A line of the wrong shape (not written by this imz) is damage too: callers must never see it.
    if (!_wellShaped(rec)) break;
    records.push(rec);
    off = nl + 1;
    bytes += _enc.encode(line).length + 1;
  }
  return { records, validBytes: bytes, validChars: off, torn: off < text.length };
}

// The fields pendingOps and push rely on, with their types.
function _wellShaped(r: unknown): r is LogRecord {
  if (r === null || typeof r !== 'object') return false;
  const x = r as Record<string, unknown>;
  if (x.t === 'sent' || x.t === 'done' || x.t === 'drop') return typeof x.upto === 'number';
  if (x.t !== 'op' || x.op === null || typeof x.op !== 'object') return false;
  const o = x.op as Record<string, unknown>;
  const st = o.state as Record<string, unknown> | null;
  return typeof o.seq === 'number' && typeof o.kind === 'number' && typeof o.path === 'string' && typeof o.fromPath === 'string' &&
    st !== null && typeof st === 'object' && typeof st.type === 'number' && typeof st.hash === 'string' && typeof st.target === 'string';
}

/** The operations still owed to the server, and which of them may already have been sent. */
export function pendingOps(records: LogRecord[]): { sent: LoggedOp[]; unsent: LoggedOp[] } {
  let sentUpto = 0;
  let doneUpto = 0;
  const ops: LoggedOp[] = [];
  // A drop supersedes the operations that were unsent when it was written; a sent mark written after it (for the
  // newer operations, whose numbers are higher) does not bring them back, or the next push would resend them.
  const dropped = new Set<number>();
  for (const r of records) {
    if (r.t === 'op') ops.push(r.op);
    else if (r.t === 'sent') sentUpto = Math.max(sentUpto, r.upto);
    else if (r.t === 'done') doneUpto = Math.max(doneUpto, r.upto);
    else for (const o of ops) if (o.seq <= r.upto && o.seq > sentUpto) dropped.add(o.seq);
  }
  const live = ops.filter((o) => o.seq > doneUpto && !dropped.has(o.seq));
  return {
    sent: live.filter((o) => o.seq <= sentUpto),
    unsent: live.filter((o) => o.seq > sentUpto),
  };
}
