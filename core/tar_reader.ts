import { Codes, ImzError } from '../protocol/errors.ts';

/** Where the bytes of one tar member go; returned by onEntry, or null to skip the member. */
export interface TarSink {
  write(bytes: Uint8Array): void;
  end(): void;
}

/** A tar member's header fields that imz uses. */
export interface TarHeader {
  name: string;
  size: number;
  type: string;
}

const BLOCK = 512;
const _dec = new TextDecoder('utf-8', { fatal: false });

/**
 * A synchronous, streaming reader of the tar streams imz servers send
 * (ustar with pax records for long names). Bytes are pushed in any split;
 * member contents go straight to the sink returned by onEntry, so nothing
 * holds a whole file. Used instead of tar-stream's extractor on the client
 * because it costs a fraction per member (no stream objects, no promises),
 * which dominates when cloning many small files. Malformed input is IMZ_PROTOCOL.
 */
export class TarReader {
  private _onEntry: (h: TarHeader) => TarSink | null;
  private _head = new Uint8Array(BLOCK);
  private _headFill = 0;
  private _remaining = 0; // content bytes left in the current member
  private _padding = 0; // bytes to skip after the content
  private _sink: TarSink | null = null;
  private _pax: Uint8Array[] | null = null;
  private _paxPath: string | undefined;
  private _ended = false;

  constructor(onEntry: (h: TarHeader) => TarSink | null) {
    this._onEntry = onEntry;
  }

  /** True once the end-of-archive block was read. */
  get ended(): boolean {
    return this._ended;
  }

  /** Feeds bytes of the archive. */
  push(chunk: Uint8Array): void {
    let off = 0;
    while (off < chunk.length && !this._ended) {
      if (this._remaining > 0) {
        const n = Math.min(this._remaining, chunk.length - off);
        const part = chunk.subarray(off, off + n);
        if (this._pax) this._pax.push(part.slice());
        else this._sink?.write(part);
        this._remaining -= n;
        off += n;
        if (this._remaining === 0) this._endMember();
        continue;
      }
      if (this._padding > 0) {
        const n = Math.min(this._padding, chunk.length - off);
        this._padding -= n;
        off += n;
        continue;
      }
      const n = Math.min(BLOCK - this._headFill, chunk.length - off);
      this._head.set(chunk.subarray(off, off + n), this._headFill);
      this._headFill += n;
      off += n;
      if (this._headFill === BLOCK) {
        this._headFill = 0;
        this._header(this._head);
      }
    }
  }

  private _header(b: Uint8Array): void {
    if (b.every((x) => x === 0)) {
      this._ended = true; // end-of-archive marker
      return;
    }
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : b[i]!;
    const stored = _octal(b, 148, 8);
    if (stored !== sum) throw new ImzError(Codes.PROTOCOL, 'cannot read tar stream: a header checksum does not match');
    const size = _octal(b, 124, 12);
    const type = b[156] === 0 ? '0' : String.fromCharCode(b[156]!);
    let name = _str(b, 0, 100);
    if (_str(b, 257, 6) === 'ustar') {
      const prefix = _str(b, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    this._remaining = size;
    this._padding = (BLOCK - (size % BLOCK)) % BLOCK;
    if (type === 'x') {
      this._pax = [];
    } else {
      if (this._paxPath !== undefined) name = this._paxPath;
      this._paxPath = undefined;
      this._sink = type === '0' || type === '7' ? this._onEntry({ name, size, type }) : null;
    }
    if (size === 0) this._endMember();
  }

  private _endMember(): void {
    if (this._pax) {
      const bytes = Buffer.concat(this._pax);
      this._pax = null;
      // Records are "LEN key=value\n", LEN counting bytes; only the path matters to imz.
      let i = 0;
      while (i < bytes.length) {
        const sp = bytes.indexOf(0x20, i);
        const len = sp < 0 ? NaN : Number(bytes.subarray(i, sp).toString('latin1'));
        if (!Number.isInteger(len) || len <= sp - i || i + len > bytes.length) throw new ImzError(Codes.PROTOCOL, 'cannot read tar stream: a pax record is malformed');
        const rec = bytes.subarray(sp + 1, i + len - 1);
        const eq = rec.indexOf(0x3d);
        if (eq > 0 && rec.subarray(0, eq).toString('latin1') === 'path') this._paxPath = _dec.decode(rec.subarray(eq + 1));
        i += len;
      }
      return;
    }
    const s = this._sink;
    this._sink = null;
    s?.end();
  }
}

function _str(b: Uint8Array, off: number, len: number): string {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return _dec.decode(b.subarray(off, end));
}

function _octal(b: Uint8Array, off: number, len: number): number {
  if (b[off]! & 0x80) throw new ImzError(Codes.PROTOCOL, 'cannot read tar stream: base-256 sizes are not supported');
  const s = _str(b, off, len).trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new ImzError(Codes.PROTOCOL, 'cannot read tar stream: a header number is not octal');
  return parseInt(s, 8);
}
