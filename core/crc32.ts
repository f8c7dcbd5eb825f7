// CRC-32 (IEEE), for checksumming journal and log records and the scan
// cache. node:zlib has it natively from Node 20.15 (and in Deno); the table
// below serves an older Node 20, with the same results.
import zlib from 'node:zlib';

const _native = typeof (zlib as { crc32?: unknown }).crc32 === 'function' ? (zlib as unknown as { crc32: (data: Uint8Array, value?: number) => number }).crc32 : undefined;

let _table: Uint32Array | undefined;

/** CRC-32 of bytes; value: the CRC of the bytes before them, to go on from (0 to start). */
export function crc32(bytes: Uint8Array, value = 0): number {
  // Nothing to add: zlib takes an empty buffer's null pointer for "start over" and answers 0.
  if (bytes.length === 0) return value >>> 0;
  if (_native) return _native(bytes, value);
  return crc32Js(bytes, value);
}

/** crc32 in JavaScript (what runs where node:zlib has none; tests compare the two). */
export function crc32Js(bytes: Uint8Array, value = 0): number {
  const t = (_table ??= _makeTable());
  let c = (value ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = t[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function _makeTable(): Uint32Array {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
}
