import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { type ChangeCode, type Entry, EntryType, type EntryTypeCode, type JournalRecord } from '../protocol/messages.ts';
import { fsyncDir, sweepStateTemps, tempNameFor, writeFileAtomic } from './atomic_fs.ts';
import { JournalStore } from './journal_store.ts';

/**
 * One path in the server's version table. Kept small (the hash as a 32-char
 * latin1 string, not a Uint8Array) because the table holds every path.
 */
export interface TableEntry {
  type: EntryTypeCode;
  size: number;
  mode: number;
  mtimeMs: number;
  hash: string;
  target: string;
  version: number;
  ino: number;
}

/** A change about to be journalled: the path's new state (type NONE for removal). */
export interface PendingChange {
  change: ChangeCode;
  path: string;
  state: Omit<TableEntry, 'version'> | undefined;
  origin?: string;
  originSeq?: number;
}

/**
 * The version table: every path's entry, and, once asked, how many paths
 * lie under each directory (kept up to date from then on), so that a
 * removal of a directory need not look through every path.
 */
export class VersionTable extends Map<string, TableEntry> {
  // (Built on the first question: start-up, which fills the table, pays nothing for it.)
  private _under: Map<string, number> | undefined;

  override set(path: string, e: TableEntry): this {
    if (this._under && !super.has(path)) _countUnder(this._under, path, 1);
    return super.set(path, e);
  }

  override delete(path: string): boolean {
    const had = super.delete(path);
    if (had && this._under) _countUnder(this._under, path, -1);
    return had;
  }

  override clear(): void {
    super.clear();
    this._under = undefined;
  }

  /** Whether any path lies under directory dir. */
  holdsUnder(dir: string): boolean {
    if (!this._under) {
      this._under = new Map();
      for (const p of this.keys()) _countUnder(this._under, p, 1);
    }
    return (this._under.get(dir) ?? 0) > 0;
  }
}

// Adds d to the count of every directory above path.
function _countUnder(under: Map<string, number>, path: string, d: number): void {
  for (let i = path.lastIndexOf('/'); i > 0; i = path.lastIndexOf('/', i - 1)) {
    const dir = path.slice(0, i);
    const n = (under.get(dir) ?? 0) + d;
    if (n === 0) under.delete(dir);
    else under.set(dir, n);
  }
}

const CHECKPOINT_EVERY = 5000;
const TABLE_MAGIC = 'imz-table';
const TABLE_VERSION = 1;

/**
 * A table entry of a state and its version, made as one literal: V8 gives
 * every object of a spread plus a new key (`{ ...st, version }`) a hidden
 * class of its own, so a table of 100,000 entries built that way held
 * 100,000 of them (30 MB more heap to mark, and every read of an entry
 * megamorphic).
 */
export function tableEntry(st: Omit<TableEntry, 'version'>, version: number): TableEntry {
  return { type: st.type, size: st.size, mode: st.mode, mtimeMs: st.mtimeMs, hash: st.hash, target: st.target, version, ino: st.ino };
}

/** Converts a table entry to the wire Entry. */
export function tableToEntry(path: string, t: TableEntry): Entry {
  return {
    path, type: t.type, size: t.size, mode: t.mode, mtimeMs: t.mtimeMs,
    hash: t.hash ? _hashBytes(t.hash) : new Uint8Array(0), target: t.target, version: t.version,
  };
}

// The bytes of a latin1 hash string, as a view into a shared slab: an
// ArrayBuffer of its own for each (a journal record's, 20,000 of them
// kept) costs an allocation and a sweep each.
function _hashBytes(latin1: string): Uint8Array {
  const n = latin1.length;
  if (n > _SLAB / 8) return new Uint8Array(Buffer.from(latin1, 'latin1'));
  if (_slabAt + n > _SLAB) {
    _slab = new Uint8Array(_SLAB);
    _slabAt = 0;
  }
  const out = _slab.subarray(_slabAt, _slabAt + n);
  for (let i = 0; i < n; i++) out[i] = latin1.charCodeAt(i);
  _slabAt += n;
  return out;
}
const _SLAB = 64 * 1024;
let _slab = new Uint8Array(_SLAB);
let _slabAt = 0;

function _entryToTable(e: Entry): TableEntry {
  return {
    type: e.type, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, hash: e.hash.length ? Buffer.from(e.hash).toString('latin1') : '',
    target: e.target, version: e.version, ino: 0,
  };
}

/**
 * The server's durable state: identity, journal and version table. Changes
 * go through commit(), which journals them (durably) before the table moves.
 * Emits 'records' (JournalRecord[]) after each commit.
 */
export class ServerState extends EventEmitter {
  readonly dir: string;
  readonly id: string;
  readonly journal: JournalStore;
  readonly table = new VersionTable();
  private _byHash: Map<string, string> | undefined;

  /**
   * A path holding each content hash (files only), built on first use and
   * then kept up to date by commits: lets PUT_BLOB skip content the tree
   * already holds (a copy, a file moved between replicas).
   */
  pathWithHash(hash: string): string | undefined {
    if (!this._byHash) {
      // (forEach: a for-of over the table made a [path, entry] pair per path, 13 MB of garbage on 100,000.)
      const byHash = new Map<string, string>();
      this.table.forEach((t, p) => {
        if (t.type === EntryType.FILE && t.hash) byHash.set(t.hash, p);
      });
      this._byHash = byHash;
    }
    const p = this._byHash.get(hash);
    if (p !== undefined && this.table.get(p)?.hash !== hash) {
      this._byHash.delete(hash);
      return undefined;
    }
    return p;
  }

  /** Highest operation seq applied per replica id: a retried push is applied once. */
  readonly origins = new Map<string, number>();
  private _sinceCheckpoint = 0;
  private _commitChain: Promise<unknown> = Promise.resolve();
  /** Commits under way (queued on _commitChain, not finished). */
  private _committing = 0;

  private constructor(dir: string, id: string, journal: JournalStore) {
    super();
    this.dir = dir;
    this.id = id;
    this.journal = journal;
  }

  /** Opens or creates the state in dir; replays the journal after the last checkpoint. */
  static async open(dir: string): Promise<ServerState> {
    await mkdir(dir, { recursive: true });
    const idFile = join(dir, 'identity');
    let id: string;
    try {
      id = JSON.parse(await readFile(idFile, 'utf8')).id;
      if (typeof id !== 'string' || !/^[0-9a-f-]{36}$/.test(id)) throw new Error('bad id');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new ImzError(Codes.CORRUPT, `cannot open server state: ${idFile} is damaged (restore it from a backup, or move the state dir away to start a new identity)`);
      }
      id = randomUUID();
      await writeFileAtomic(idFile, JSON.stringify({ id, created: new Date().toISOString() }) + '\n');
    }
    // Temp files of a state write (the table checkpoint) that a killed server left.
    sweepStateTemps([dir]);
    const journal = await JournalStore.open(join(dir, 'journal'));
    const s = new ServerState(dir, id, journal);
    let ckptSeq = await s._loadCheckpoint();
    if (ckptSeq > journal.last) {
      // The checkpoint describes records the journal never got to disk (a
      // crash or a full disk right after it): the journal is the truth.
      s.table.clear();
      s.origins.clear();
      ckptSeq = 0;
    }
    for await (const batch of journal.readSince(ckptSeq)) {
      for (const r of batch) s._applyToTable(r);
    }
    return s;
  }

  /** Sequence number of the newest record (0 for an empty journal). */
  get lastSeq(): number {
    return this.journal.last;
  }

  /**
   * Journals changes in order (durably), then updates the table. Commits are
   * serialised, so sequence numbers follow commit order.
   */
  commit(changes: PendingChange[], opts: { durable?: boolean } = {}): Promise<JournalRecord[]> {
    this._committing++;
    const run = this._commitChain.then(() => this._commit(changes, opts.durable ?? true));
    this._commitChain = run.catch(() => {}).then(() => {
      this._committing--;
    });
    return run;
  }

  /**
   * commit(changes, { durable: false }) done at once, when no commit is
   * under way and no checkpoint falls due (most operations of a batch):
   * the same records, without a turn of the commit chain per operation.
   * Undefined otherwise: commit then.
   */
  commitNow(changes: PendingChange[]): JournalRecord[] | undefined {
    if (this._committing > 0 || changes.length === 0 || this._checkpointDue(changes.length)) return undefined;
    const records = this._records(changes);
    this._appendDeferred(records);
    this._toTable(records, changes);
    return records;
  }

  /**
   * Waits until every record committed so far is durable. A batch of
   * operations commits with durable: false, then flushes once before it is
   * acknowledged: one journal sync per batch instead of one per operation.
   */
  async flush(): Promise<void> {
    await this._commitChain;
    await this.journal.flush();
  }

  private async _commit(changes: PendingChange[], durable: boolean): Promise<JournalRecord[]> {
    if (changes.length === 0) return [];
    const records = this._records(changes);
    if (durable) await this.journal.append(records);
    else this._appendDeferred(records);
    this._toTable(records, changes);
    if (this._checkpointDue(0)) await this.checkpoint();
    if (durable) this.emit('records', records);
    return records;
  }

  // The journal records of changes, numbered on from the last.
  private _records(changes: PendingChange[]): JournalRecord[] {
    let seq = this.journal.last;
    const now = Date.now();
    return changes.map((c) => {
      seq++;
      const entry: Entry = c.state
        ? tableToEntry(c.path, tableEntry(c.state, seq))
        : { path: c.path, type: EntryType.NONE, size: 0, mode: 0, mtimeMs: 0, hash: new Uint8Array(0), target: '', version: seq };
      return { seq, change: c.change, entry, origin: c.origin ?? '', originSeq: c.originSeq ?? 0, timeMs: now };
    });
  }

  // Appends records to be written with the next flush. Followers hear of
  // them once they are on disk (a crash must not take back what they
  // applied). flush() reports a failed write to whoever acknowledges the
  // batch; an 'error' event nobody listens to would crash the whole server.
  private _appendDeferred(records: JournalRecord[]): void {
    this.journal.append(records, { deferred: true }).then(() => this.emit('records', records), (err) => { if (this.listenerCount('error') > 0) this.emit('error', err); });
  }

  // The table (and origins) after records of changes.
  private _toTable(records: JournalRecord[], changes: PendingChange[]): void {
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!;
      if (r.origin) this.origins.set(r.origin, Math.max(this.origins.get(r.origin) ?? 0, r.originSeq));
      const st = changes[i]!.state;
      if (st) this.table.set(r.entry.path, tableEntry(st, r.seq));
      else this.table.delete(r.entry.path);
      if (this._byHash && st?.type === EntryType.FILE && st.hash) this._byHash.set(st.hash, r.entry.path);
    }
    this._sinceCheckpoint += records.length;
  }

  // Amortised: a checkpoint costs the table size, so it waits for at least that many records (more to come: n).
  private _checkpointDue(n: number): boolean {
    return this._sinceCheckpoint + n >= Math.max(CHECKPOINT_EVERY, this.table.size);
  }

  private _applyToTable(r: JournalRecord): void {
    if (r.origin) this.origins.set(r.origin, Math.max(this.origins.get(r.origin) ?? 0, r.originSeq));
    if (r.entry.type === EntryType.NONE) this.table.delete(r.entry.path);
    else this.table.set(r.entry.path, _entryToTable(r.entry));
  }

  /** Writes the table to disk (atomically) so start-up replays only newer records. */
  async checkpoint(): Promise<void> {
    const seq = this.journal.last;
    // Written in pieces: one string for a million entries would cost more memory than the table.
    const file = join(this.dir, 'table');
    const tmp = tempNameFor(file);
    const fh = await open(tmp, 'wx', 0o644);
    try {
      let buf: string[] = [JSON.stringify({ magic: TABLE_MAGIC, v: TABLE_VERSION, seq, count: this.table.size, origins: Object.fromEntries(this.origins) })];
      for (const [p, t] of this.table) {
        buf.push(JSON.stringify([p, t.type, t.size, t.mode, t.mtimeMs, t.hash ? Buffer.from(t.hash, 'latin1').toString('base64') : '', t.target, t.version, t.ino]));
        if (buf.length >= 4096) {
          await fh.write(buf.join('\n') + '\n');
          buf = [];
        }
      }
      buf.push(JSON.stringify({ end: this.table.size }));
      await fh.write(buf.join('\n') + '\n');
      await fh.datasync();
    } catch (err) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw err;
    }
    await fh.close();
    await rename(tmp, file);
    await fsyncDir(this.dir);
    this._sinceCheckpoint = 0;
  }

  private async _loadCheckpoint(): Promise<number> {
    let text: string;
    try {
      text = await readFile(join(this.dir, 'table'), 'utf8');
    } catch {
      return 0;
    }
    const lines = text.split('\n').filter((l) => l.length > 0);
    try {
      const head = JSON.parse(lines[0]!);
      const tail = JSON.parse(lines[lines.length - 1]!);
      if (head.magic !== TABLE_MAGIC || head.v !== TABLE_VERSION || tail.end !== lines.length - 2) throw new Error('bad checkpoint');
      for (let i = 1; i < lines.length - 1; i++) {
        const [p, type, size, mode, mtimeMs, hash, target, version, ino] = JSON.parse(lines[i]!);
        this.table.set(p, { type, size, mode, mtimeMs, hash: hash ? Buffer.from(hash, 'base64').toString('latin1') : '', target, version, ino });
      }
      for (const [o, n] of Object.entries(head.origins ?? {})) if (typeof n === 'number') this.origins.set(o, n);
      return head.seq;
    } catch {
      this.origins.clear();
      // A damaged checkpoint is only a cache: rebuild the table from the whole journal.
      this.table.clear();
      return 0;
    }
  }

  /** Flushes the journal and writes a final checkpoint. */
  async close(): Promise<void> {
    await this._commitChain;
    await this.checkpoint().catch(() => {});
    await this.journal.close();
  }
}
