import { Codes, ImzError } from '../protocol/errors.ts';
import { type JournalRecord, decodeRecord, encodeRecord } from '../protocol/messages.ts';
import { crc32 } from './crc32.ts';

/** Magic and format version at the start of every journal segment. */
export const SEGMENT_MAGIC = 'IMZJ';
export const SEGMENT_VERSION = 1;
export const SEGMENT_HEADER_SIZE = 8;
const RECORD_HEADER = 8; // u32 length + u32 crc32 of the payload
/** Largest record payload accepted when reading (a corrupt length must not allocate wildly). */
export const MAX_RECORD = 1024 * 1024;

/** The 8-byte header of a new segment. */
export function segmentHeader(): Uint8Array {
  const b = new Uint8Array(SEGMENT_HEADER_SIZE);
  b.set(new TextEncoder().encode(SEGMENT_MAGIC), 0);
  new DataView(b.buffer).setUint32(4, SEGMENT_VERSION, false);
  return b;
}

/** Checks a segment header; throws IMZ_CORRUPT on an unknown format. */
export function checkSegmentHeader(b: Uint8Array, name: string): void {
  if (b.length < SEGMENT_HEADER_SIZE || new TextDecoder().decode(b.subarray(0, 4)) !== SEGMENT_MAGIC) {
    throw new ImzError(Codes.CORRUPT, `cannot read journal: ${name} is not an imz journal segment`);
  }
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(4, false);
  if (v !== SEGMENT_VERSION) throw new ImzError(Codes.CORRUPT, `cannot read journal: ${name} has format version ${v}, this imz reads ${SEGMENT_VERSION}`);
}

/** Encodes records as checksummed frames ready to append to a segment. */
export function encodeJournalRecords(records: JournalRecord[]): Uint8Array {
  const parts = records.map(encodeRecord);
  const total = parts.reduce((n, p) => n + RECORD_HEADER + p.length, 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  let off = 0;
  for (const p of parts) {
    dv.setUint32(off, p.length, false);
    dv.setUint32(off + 4, crc32(p), false);
    out.set(p, off + RECORD_HEADER);
    off += RECORD_HEADER + p.length;
  }
  return out;
}

/** Result of decoding a segment body: the intact records and where they end. */
export interface DecodedSegment {
  records: JournalRecord[];
  /** Byte offset (from the segment start) after the last intact record. */
  validEnd: number;
  /** True when bytes after validEnd were cut (a torn or corrupt tail). */
  torn: boolean;
}

/**
 * Decodes the records of a segment (header included in bytes). Stops at the
 * first short, oversize or checksum-failing record: after a crash the tail
 * may be torn, and everything before it is intact.
 */
export function decodeSegment(bytes: Uint8Array, name = 'segment'): DecodedSegment {
  checkSegmentHeader(bytes, name);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: JournalRecord[] = [];
  let off = SEGMENT_HEADER_SIZE;
  while (off < bytes.length) {
    if (bytes.length - off < RECORD_HEADER) break;
    const len = dv.getUint32(off, false);
    const crc = dv.getUint32(off + 4, false);
    if (len > MAX_RECORD || off + RECORD_HEADER + len > bytes.length) break;
    const payload = bytes.subarray(off + RECORD_HEADER, off + RECORD_HEADER + len);
    if (crc32(payload) !== crc) break;
    let rec: JournalRecord;
    try {
      rec = decodeRecord(payload);
    } catch {
      break;
    }
    records.push(rec);
    off += RECORD_HEADER + len;
  }
  return { records, validEnd: off, torn: off < bytes.length };
}
