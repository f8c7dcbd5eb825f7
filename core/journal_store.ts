import { mkdir, open, readdir, readFile, rename, rm, truncate, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { JournalRecord } from '../protocol/messages.ts';
import { fsyncCostsIo, fsyncDir } from './atomic_fs.ts';
import { SEGMENT_HEADER_SIZE, decodeSegment, encodeJournalRecords, segmentHeader } from './journal_model.ts';

/** Segment files rotate past this size. */
const SEGMENT_LIMIT = 4 * 1024 * 1024;
/** Recent records kept in memory so followers and pulls rarely touch disk. */
const RECENT_MAX = 20000;
/** Deferred records waiting beyond which they are written without a flush (bounded memory, larger writes). */
const _DEFER_MAX = 4096;

interface _Segment { firstSeq: number; file: string }

/**
 * The server's append-only journal (InterMezzo's KML): numbered segments of
 * checksummed records in dir. Appends are group-committed (one write and one
 * fdatasync per batch) and resolve only once durable.
 */
export class JournalStore {
  readonly dir: string;
  private _segments: _Segment[] = [];
  private _fh: FileHandle | undefined;
  private _size = 0;
  private _first = 0;
  private _last = 0;
  // The newest record known to be on disk (datasync'd): only those are served.
  private _durable = 0;
  private _recent: JournalRecord[] = [];
  private _queue: { records: JournalRecord[]; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private _writing = false;
  // Who waits for the writer to finish (flush, close): woken when it does, not polled.
  private _idle: Array<() => void> = [];
  private _failed: Error | undefined;
  // Records appended deferred and not being written yet.
  private _deferred = 0;
  /**
   * Records whose write failed (a full disk): already handed out (sequence
   * numbers, the table, followers), so they are written again, first, at the
   * next append or flush instead of leaving a hole the next records would
   * hide behind.
   */
  private _unwritten: JournalRecord[] = [];
  /** Bytes cut from a torn tail when the journal was opened (0 when clean). */
  tornBytes = 0;
  // On a memory-backed file system a datasync does nothing: not worth a thread-pool round trip per batch.
  private readonly _syncs: boolean;

  private constructor(dir: string) {
    this.dir = dir;
    this._syncs = fsyncCostsIo(dir);
  }

  /** Opens (or creates) the journal in dir, cutting a torn tail left by a crash. */
  static async open(dir: string): Promise<JournalStore> {
    const j = new JournalStore(dir);
    await mkdir(dir, { recursive: true });
    const names = (await readdir(dir)).filter((n) => /^\d{20}\.seg$/.test(n)).sort();
    for (const n of names) j._segments.push({ firstSeq: Number(n.slice(0, 20)), file: join(dir, n) });
    if (j._segments.length > 0) {
      const lastSeg = j._segments[j._segments.length - 1]!;
      const bytes = new Uint8Array(await readFile(lastSeg.file));
      const dec = decodeSegment(bytes, lastSeg.file);
      if (dec.torn) {
        j.tornBytes = bytes.length - dec.validEnd;
        await truncate(lastSeg.file, dec.validEnd);
      }
      j._size = dec.validEnd;
      j._recent = dec.records.slice(-RECENT_MAX);
      if (dec.records.length > 0) j._last = dec.records[dec.records.length - 1]!.seq;
      else if (j._segments.length > 1) {
        // An empty last segment: the newest record is in the one before it.
        const prev = j._segments[j._segments.length - 2]!;
        const p = decodeSegment(new Uint8Array(await readFile(prev.file)), prev.file);
        if (p.records.length > 0) j._last = p.records[p.records.length - 1]!.seq;
      }
      j._first = (await _firstSeq(j._segments[0]!.file)) ?? (j._last > 0 ? j._last : 0);
      j._durable = j._last;
      j._fh = await open(lastSeg.file, 'a');
    }
    return j;
  }

  /** Oldest sequence number in the journal (0 when empty). */
  get first(): number {
    return this._first;
  }

  /** Newest sequence number (0 when empty). */
  get last(): number {
    return this._last;
  }

  /**
   * Appends records (seq already assigned, increasing); resolves once they
   * are durable. deferred: written only at the next flush (or once many are
   * waiting), so a batch of commits costs one write and one fdatasync, not
   * one each as they come (on a disk, each of those is a flush of its own).
   */
  append(records: JournalRecord[], opts: { deferred?: boolean } = {}): Promise<void> {
    if (records.length === 0) return Promise.resolve();
    for (const r of records) this._last = r.seq;
    if (this._first === 0) this._first = records[0]!.seq;
    for (const r of records) this._recent.push(r);
    if (this._recent.length > RECENT_MAX * 1.5) this._recent = this._recent.slice(-RECENT_MAX);
    return new Promise<void>((resolve, reject) => {
      this._queue.push({ records, resolve, reject });
      if (opts.deferred) this._deferred += records.length;
      if (!this._writing && (!opts.deferred || this._deferred >= _DEFER_MAX)) void this._flush();
    });
  }

  private async _flush(): Promise<void> {
    this._writing = true;
    try {
      while (this._queue.length > 0 || this._unwritten.length > 0) {
        const batch = this._queue;
        this._queue = [];
        this._deferred = 0;
        const all = [...this._unwritten, ...batch.flatMap((b) => b.records)];
        try {
          if (!this._fh || this._size >= SEGMENT_LIMIT) await this._rotate(all[0]!.seq);
          const bytes = encodeJournalRecords(all);
          await _writeAll(this._fh!, bytes);
          if (this._syncs) await this._fh!.datasync();
          this._size += bytes.length;
          this._unwritten = [];
          this._durable = all[all.length - 1]!.seq;
          for (const b of batch) b.resolve();
        } catch (err) {
          // Cut what a short write left (a torn record would hide every later
          // one when the journal is next opened) and keep the records for the
          // next attempt; the commits waiting on them fail now.
          await this._fh?.truncate(this._size).catch(() => {});
          const later = this._queue;
          this._queue = [];
          this._unwritten = [...all, ...later.flatMap((b) => b.records)];
          this._failed = err as Error;
          for (const b of [...batch, ...later]) b.reject(err);
          break;
        }
      }
    } finally {
      this._writing = false;
      const idle = this._idle;
      this._idle = [];
      for (const wake of idle) wake();
    }
  }

  private async _rotate(firstSeq: number): Promise<void> {
    const name = join(this.dir, `${String(firstSeq).padStart(20, '0')}.seg`);
    const tmp = `${name}.tmp`;
    try {
      const fh = await open(tmp, 'w');
      try {
        await fh.write(segmentHeader());
        await fh.datasync();
      } finally {
        await fh.close();
      }
      await rename(tmp, name);
    } catch (err) {
      // The current segment stays open and in use: appends go on there.
      await rm(tmp, { force: true }).catch(() => {});
      throw err;
    }
    await fsyncDir(this.dir);
    await this._fh?.close();
    this._segments.push({ firstSeq, file: name });
    this._fh = await open(name, 'a');
    this._size = SEGMENT_HEADER_SIZE;
  }

  /** The newest sequence number on disk: what a crash cannot take back. */
  get durableLast(): number {
    return this._durable;
  }

  /**
   * Yields durable records with seq > since, in order, in batches (a record
   * not yet on disk could vanish in a crash and its number be reused).
   */
  async *readSince(since: number, batch = 1000): AsyncGenerator<JournalRecord[]> {
    const upto = this._durable;
    if (since >= upto) return;
    const recentFirst = this._recent[0]?.seq ?? Infinity;
    if (since + 1 >= recentFirst) {
      const snap = this._recent; // records are appended; a slice is a stable view
      let i = _lowerBound(snap, since + 1);
      const end = _lowerBound(snap, upto + 1);
      while (i < end) {
        yield snap.slice(i, Math.min(i + batch, end));
        i += batch;
      }
      return;
    }
    let idx = 0;
    for (let i = 0; i < this._segments.length; i++) if (this._segments[i]!.firstSeq <= since + 1) idx = i;
    for (let i = idx; i < this._segments.length; i++) {
      const seg = this._segments[i]!;
      const dec = decodeSegment(new Uint8Array(await readFile(seg.file)), seg.file);
      const recs = dec.records.filter((r) => r.seq > since && r.seq <= upto);
      for (let k = 0; k < recs.length; k += batch) yield recs.slice(k, k + batch);
    }
  }

  /**
   * The durable record numbered seq; undefined when the journal no longer
   * (or not yet durably) holds it. One decoded segment is kept, so looking
   * up many old records of one segment (the bases of a push's stale
   * operations) decodes it once, not once each.
   */
  async record(seq: number): Promise<JournalRecord | undefined> {
    if (!Number.isSafeInteger(seq) || seq < 1 || seq > this._durable) return undefined;
    let recs: JournalRecord[] = this._recent;
    if (recs.length === 0 || seq < recs[0]!.seq) {
      let seg: _Segment | undefined;
      for (const x of this._segments) if (x.firstSeq <= seq) seg = x;
      if (!seg) return undefined;
      const kept = this._decoded;
      if (kept?.file === seg.file && (kept.records.at(-1)?.seq ?? 0) >= seq) recs = kept.records;
      else {
        recs = decodeSegment(new Uint8Array(await readFile(seg.file)), seg.file).records;
        this._decoded = { file: seg.file, records: recs };
      }
    }
    const r = recs[_lowerBound(recs, seq)];
    return r?.seq === seq ? r : undefined;
  }

  private _decoded: { file: string; records: JournalRecord[] } | undefined;

  /** Resolves once every append made so far is durable (rejects if one failed). */
  async flush(): Promise<void> {
    // Records a failed write left behind: try them again (the disk may have room now).
    if (!this._writing && this._unwritten.length > 0) {
      this._failed = undefined;
      void this._flush();
    }
    await this._whenIdle();
    if (this._unwritten.length > 0 && !this._failed) this._failed = new Error('journal records could not be written');
    if (this._failed) {
      const e = this._failed;
      this._failed = undefined;
      throw e;
    }
  }

  // Resolves once the writer has nothing left to write (a batch acknowledged waits ~1 ms less than with a polling timer).
  private async _whenIdle(): Promise<void> {
    while (this._writing || this._queue.length > 0) {
      if (!this._writing) void this._flush();
      await new Promise<void>((r) => this._idle.push(r));
    }
  }

  /** Closes the segment file (pending appends finish first). */
  async close(): Promise<void> {
    if (!this._writing && this._unwritten.length > 0) void this._flush(); // a last try
    await this._whenIdle();
    await this._fh?.close();
    this._fh = undefined;
  }
}

// Writes all of bytes: a write to a nearly full disk can be short.
async function _writeAll(fh: FileHandle, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, off, bytes.length - off);
    if (bytesWritten === 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    off += bytesWritten;
  }
}

function _lowerBound(a: JournalRecord[], seq: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]!.seq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// The first record's seq, reading only the start of the segment.
async function _firstSeq(file: string): Promise<number | undefined> {
  const fh = await open(file, 'r');
  try {
    const buf = new Uint8Array(64 * 1024);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return decodeSegment(buf.subarray(0, bytesRead), file).records[0]?.seq;
  } finally {
    await fh.close();
  }
}
