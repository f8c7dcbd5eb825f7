// Byte helpers the frame codec's suites share.
import { HEADER_SIZE } from '../../protocol/frame_codec.ts';

/** The parts joined into one array. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** A 4-byte big-endian length prefix with no body. */
export function header(len: number): Uint8Array {
  const h = new Uint8Array(HEADER_SIZE);
  new DataView(h.buffer).setUint32(0, len, false);
  return h;
}
