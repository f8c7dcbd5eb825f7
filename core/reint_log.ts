import { closeSync, fdatasyncSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { copyFile, truncate } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncDirSync, writeFileAtomic } from './atomic_fs.ts';
import { LOG_HEADER, type LogRecord, type LoggedOp, decodeLog, encodeLogRecords, pendingOps } from './reint_log_model.ts';

/**
 * The replica's reintegration log (Coda's CML) in .imz/log, plus the
 * operation counter in .imz/opseq that never goes back (the server uses
 * (replica id, seq) to apply each operation once). Appends are fsynced.
 */
export class ReintLog {
  readonly file: string;
  readonly seqFile: string;
  private _records: LogRecord[];
  private _nextSeq: number;
  /** No file yet, or an empty one: the first append writes the header too. */
  private _headless: boolean;

  private constructor(file: string, seqFile: string, records: LogRecord[], nextSeq: number, headless: boolean) {
    this.file = file;
    this.seqFile = seqFile;
    this._records = records;
    this._nextSeq = nextSeq;
    this._headless = headless;
  }

  /** Opens the log, cutting a torn tail left by a crash. */
  static async open(stateDir: string): Promise<ReintLog> {
    const file = join(stateDir, 'log');
    const seqFile = join(stateDir, 'opseq');
    // Synchronous reads and writes here: the log is small and read once per push, and each thread-pool round trip of
    // the asynchronous calls (four for a readFile) costs more than the work.
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch { /* no log yet */ }
    const dec = decodeLog(text);
    // A torn last line is a crash's leftover; damage before it is not: keep
    // a copy of the whole file before cutting (the working tree still holds
    // every change, and the next scan logs it again).
    const rest = text.slice(dec.validChars); // characters, not bytes: a path may be any UTF-8
    if (dec.torn && rest.indexOf('\n') >= 0 && rest.indexOf('\n') < rest.length - 1) {
      await copyFile(file, join(stateDir, `log.damaged-${Date.now()}`));
    }
    if (dec.torn && dec.validBytes > 0) await truncate(file, dec.validBytes);
    // Nothing there: nothing is written until something is logged (a push that fails before it logs leaves no trace).
    // Something that is no log at all: replaced by an empty one now.
    if (dec.validBytes === 0 && text !== '') await writeFileAtomic(file, `${LOG_HEADER}\n`);
    let nextSeq = 1;
    try {
      nextSeq = Number(JSON.parse(readFileSync(seqFile, 'utf8')).next) || 1;
    } catch { /* first push */ }
    for (const r of dec.records) if (r.t === 'op' && r.op.seq >= nextSeq) nextSeq = r.op.seq + 1;
    return new ReintLog(file, seqFile, dec.records, nextSeq, text === '');
  }

  /** Operations possibly sent but not acknowledged, and never-sent ones. */
  pending(): { sent: LoggedOp[]; unsent: LoggedOp[] } {
    return pendingOps(this._records);
  }

  /** Makes the next reservation start above seq (the highest the server applied from this replica). */
  numberAbove(seq: number): void {
    if (Number.isSafeInteger(seq) && seq < 2 ** 50 && seq >= this._nextSeq) this._nextSeq = seq + 1;
  }

  /** Reserves n operation sequence numbers durably; returns the first. */
  async reserve(n: number): Promise<number> {
    const first = this._nextSeq;
    this._nextSeq += n;
    await writeFileAtomic(this.seqFile, JSON.stringify({ next: this._nextSeq }) + '\n');
    return first;
  }

  /** Appends records and fsyncs. */
  async append(records: LogRecord[]): Promise<void> {
    if (records.length === 0) return;
    const fd = openSync(this.file, 'a');
    try {
      const bytes = encodeLogRecords(records, this._headless);
      for (let off = 0; off < bytes.length;) off += writeSync(fd, bytes, off);
      fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // A file just made: its name is durable too before anything counts as logged.
    if (this._headless) fsyncDirSync(dirname(this.file));
    this._headless = false;
    this._records.push(...records);
  }

  /** Empties the log once everything in it is acknowledged. */
  async clear(): Promise<void> {
    // Holding nothing, the file is its header alone (open cut any torn tail): a no-op push writes and syncs nothing.
    if (this._records.length === 0) return;
    // Cut back to its header line in place (open made sure it begins with it), and not synced: everything in it is
    // acknowledged and indexed durably already, so a crash that brings the records back only has the next push
    // resend them, which the server answers as duplicates (checked against what it holds). The next append's
    // fdatasync makes the cut durable with it.
    const fd = openSync(this.file, 'r+');
    try {
      ftruncateSync(fd, _HEADER_BYTES);
    } finally {
      closeSync(fd);
    }
    this._records = [];
  }
}

/** The log's header line, in bytes: all an empty log holds. */
const _HEADER_BYTES = Buffer.byteLength(`${LOG_HEADER}\n`);
