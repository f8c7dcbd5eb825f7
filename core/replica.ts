import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, fdatasyncSync, lstatSync, openSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { EntryType } from '../protocol/constants.ts';
import { Codes, ImzError } from '../protocol/errors.ts';
import { fsyncCostsIo, fsyncDirSync, fsyncFd, inParallel, readFileOrNot, tempNameFor, writeFileAtomic } from './atomic_fs.ts';
import { BUCKETS, type IndexEntry, appendedBucket, bucketCount, bucketOf, bucketText, decodeBucket, encodeBucket, encodeRows, replaceRow, rowOf, rowsOfBucketText } from './index_model.ts';
import { REPLICA_DIR, TMP_PREFIX, parentOf, pathProblem } from './paths.ts';
import { hashFileSync, toHex } from './hash.ts';
import { crc32 } from './crc32.ts';
import { utf8 } from './utf8.ts';
import { monotonicMs } from './file_times.ts';
import { replicaRootOf } from './scan_cache_file.ts';
import { IGNORE_FILE } from './ignore_rules.ts';

export { replicaRootOf };

/** `.imz/config`: how this replica talks to its server. */
export interface ReplicaConfig {
  format: number;
  remote: string;
  mode: 'full' | 'on-demand';
  policy: string;
  replicaId: string;
  /** Token file given at clone (absolute); the token itself is never stored here. */
  tokenFile?: string;
  /** TLS settings given at clone: present means connect over TLS. */
  tls?: { ca?: string; fingerprint?: string };
  /** On-demand replicas: most bytes of fetched content kept; least recently fetched files are evicted beyond it. */
  maxCache?: number;
}

/** `.imz/HEAD`: which server this replica follows and how far it has replayed. */
export interface Head {
  serverId: string;
  cursor: number;
  /** True while a clone has not finished (a re-run resumes it). */
  cloning?: boolean;
  /**
   * Files a pull or a follower could not fetch (the server's content no
   * longer matched its record: it kept changing), though the cursor went past
   * their records: the next pull asks the server for them again.
   */
  owed?: string[];
}

/**
 * A replica's state directory (.imz/): config, HEAD, the bucketed index,
 * the lock, and the list of directories that may hold temp files of an
 * interrupted run.
 */
export class Replica {
  readonly root: string;
  /** When this process took the lock (monotonicMs), while it holds it: a scan under it judges the tree afresh. */
  lockedAt: number | undefined;
  readonly stateDir: string;
  config!: ReplicaConfig;
  head!: Head;
  /** True when HEAD was damaged or lost and open was asked to rebuild it (pull --resync): the server followed is unknown. */
  headRebuilt = false;
  private _buckets = new Map<number, Map<string, IndexEntry>>();
  /**
   * Buckets not parsed, that addNew added entries to: the bytes read (undefined: no file yet), the count of
   * entries its header gives, and the entries added. Parsed (and the entries merged) when anything reads them.
   */
  private _unparsed = new Map<number, { file: Uint8Array | undefined; count: number; adds: Map<string, IndexEntry> }>();
  /**
   * Buckets read but not parsed, whose rows get and set find in their text one by one (a push of a few changes
   * looks at a few rows of buckets of hundreds): the entry count of the header, and the rows found so far (null:
   * none for that path). Their rows (_rows) are the text with the rows set since replaced. Parsed from that text
   * when anything needs more (a path added or deleted, all entries).
   */
  private _sparse = new Map<number, { count: number; seen: Map<string, IndexEntry | null> }>();
  private _dirty = new Set<number>();
  /** Whether an fdatasync in the index directory does any I/O (not on tmpfs); read on first use. */
  private _syncCostsIo: boolean | undefined;
  /**
   * Per bucket, its rows as last read or written (with the rows of paths
   * set since replaced in the text), and the paths added since: a bucket
   * that gained entries (a push of new files touches every bucket) or had a
   * few changed is written without encoding it all again. The rows are the
   * text's, or, until something needs them as text, those of a file's bytes.
   */
  private _rows = new Map<number, _Rows>();
  /** What flushIndex is writing (a text, or bytes made without one), and the CRC-32 of the bytes, kept until they are in place. */
  private _encodedLast = new Map<number, { text?: string; file?: Uint8Array; sum: number }>();
  /** Per bucket this process wrote, the CRC-32 of the bytes it wrote (see writtenBucket). */
  private _writtenSums = new Map<number, number>();
  /** Per bucket, the paths this process set or deleted (see changedPaths). */
  private _changedPaths = new Map<number, Set<string>>();
  /**
   * Per parsed bucket, how it changed since markAppends: the paths it held
   * then that were deleted or set again (removed), and the entries set
   * since of paths it lacked or that were removed (adds); null for a bucket
   * appended to before markAppends. With the rows the scan cache read, they
   * are all the bucket holds (see deltaOf).
   */
  private _deltas = new Map<number, BucketDelta | null>();
  private _locked = false;

  private constructor(root: string) {
    this.root = resolve(root);
    this.stateDir = join(this.root, REPLICA_DIR);
  }

  /** Creates .imz/ in root (which must exist). */
  static async init(root: string, remote: string, mode: ReplicaConfig['mode'], extra: Partial<Pick<ReplicaConfig, 'tokenFile' | 'tls' | 'maxCache'>> = {}): Promise<Replica> {
    const r = new Replica(root);
    await mkdir(join(r.stateDir, 'index'), { recursive: true });
    await mkdir(join(r.stateDir, 'conflicts'), { recursive: true });
    r.config = { format: 1, remote, mode, policy: 'manual', replicaId: randomUUID(), ...extra };
    r.head = { serverId: '', cursor: 0, cloning: true };
    await writeFileAtomic(join(r.stateDir, 'config'), JSON.stringify(r.config, null, 2) + '\n');
    await r.saveHead();
    return r;
  }

  /** Writes .imz/config (atomically) after a change of mode or settings. */
  async saveConfig(): Promise<void> {
    await writeFileAtomic(join(this.stateDir, 'config'), JSON.stringify(this.config, null, 2) + '\n');
  }

  /**
   * Opens the replica at dir, or the nearest ancestor holding .imz/ (as git
   * does). rebuildHead (pull --resync): a damaged or missing HEAD is taken
   * as following no server from record 0, which a resync rebuilds.
   */
  static async open(dir: string, opts: { rebuildHead?: boolean } = {}): Promise<Replica> {
    const cur = replicaRootOf(dir);
    if (cur === undefined) throw new ImzError(Codes.NOT_REPLICA, `cannot find a replica: ${resolve(dir)} is not inside an imz replica (run \`imz clone HOST:PORT DIR\`, or pass -C DIR)`);
    const r = new Replica(cur);
    // Small files, read synchronously: a follower opens the replica for every batch.
    const config = _stateFile(join(r.stateDir, 'config'));
    if (!_isConfig(config)) {
      throw new ImzError(Codes.CORRUPT, `cannot open replica ${cur}: .imz/config is ${config instanceof Error ? `unreadable (${config.message})` : 'damaged'}; restore it from a backup (it names the server and this replica's id)`);
    }
    r.config = config;
    if (r.config.format !== 1) throw new ImzError(Codes.CORRUPT, `cannot open replica ${cur}: .imz/config has format ${r.config.format}, this imz reads 1`);
    const head = _stateFile(join(r.stateDir, 'HEAD'));
    if (_isHead(head)) r.head = head;
    else if (opts.rebuildHead) {
      r.head = { serverId: '', cursor: 0 };
      r.headRebuilt = true;
    }
    else throw new ImzError(Codes.CORRUPT, `cannot open replica ${cur}: .imz/HEAD is ${head instanceof Error ? `unreadable (${head.message})` : 'damaged'}; run \`imz pull --resync\` to rebuild it (it compares by hash; local changes are kept)`);
    return r;
  }

  /** Writes HEAD durably (call only after the data it describes is durable). */
  async saveHead(): Promise<void> {
    await writeFileAtomic(join(this.stateDir, 'HEAD'), JSON.stringify(this.head) + '\n');
  }

  /** Takes the replica lock, failing clearly if another imz holds it. */
  async lock(): Promise<void> {
    const file = join(this.stateDir, 'lock');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(file, 'wx');
        try {
          writeFileSync(fd, JSON.stringify({ pid: process.pid, since: new Date().toISOString() }));
        } catch (err) {
          // A full disk: an empty lock would make every run wait for it to go stale.
          closeSync(fd);
          rmSync(file, { force: true });
          throw err;
        }
        closeSync(fd);
        this._locked = true;
        this.lockedAt = monotonicMs();
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      let holder: { pid?: number; since?: string } = {};
      let unreadable = false;
      try {
        const v: unknown = JSON.parse(await readFile(file, 'utf8'));
        if (v === null || typeof v !== 'object' || typeof (v as { pid?: unknown }).pid !== 'number') throw new Error('not a lock');
        holder = v as typeof holder;
      } catch (err) {
        // Not ours to remove (a stale lock is a file).
        if ((err as NodeJS.ErrnoException).code === 'EISDIR') throw new ImzError(Codes.LOCKED, `cannot lock replica: ${file} is a directory, not a lock imz made; remove it if no imz is running in ${this.root}`);
        unreadable = true; // being written right now, or a crash right after creating it (or damaged)
      }
      const age = unreadable ? Date.now() - (await stat(file).then((s) => s.mtimeMs, () => Date.now())) : 0;
      if ((holder.pid && !_alive(holder.pid)) || (unreadable && age > 5000)) {
        await rm(file, { force: true }); // its owner died: a stale lock
        continue;
      }
      throw new ImzError(Codes.LOCKED, `cannot lock replica: another imz (pid ${holder.pid ?? '?'}, since ${holder.since ?? '?'}) is working in ${this.root}; wait for it to finish, or remove ${file} if it is gone`);
    }
    throw new ImzError(Codes.LOCKED, `cannot lock replica: ${file} is held`);
  }

  /** Releases the lock. */
  async unlock(): Promise<void> {
    if (!this._locked) return;
    this._locked = false;
    this.lockedAt = undefined;
    // unlink, not rmSync: rm loads a module of its own (~0.5 ms at the end of every command).
    try {
      unlinkSync(join(this.stateDir, 'lock'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  // Bucket b, read and parsed on first use (synchronous reads: see _readBucket).
  private _bucket(b: number): Map<string, IndexEntry> {
    let m = this._buckets.get(b);
    if (m) return m;
    const name = this.bucketFile(b);
    const s = this._sparse.get(b);
    if (s) {
      // Its text as it now stands (rows set since replaced in it), the rows kept as they are. Parsed first: damaged,
      // it stays sparse, its rows set since kept for flushIndex (half converted, they were lost, or the flush failed).
      m = decodeBucket(bucketText(s.count, _rowsText(this._rows.get(b)!)), name);
      this._sparse.delete(b);
      this._buckets.set(b, m);
      return m;
    }
    const u = this._unparsed.get(b);
    if (u) {
      // Its rows (as read, and as added) stay as they are.
      m = u.file === undefined ? new Map() : decodeBucket(utf8(u.file), name);
      for (const [p, e] of u.adds) m.set(p, e);
      this._unparsed.delete(b);
      if (this._deltas.get(b) !== null) this._deltas.set(b, { adds: new Map(u.adds), removed: new Set() });
      this._buckets.set(b, m);
      return m;
    }
    const text = this._readBucket(name);
    m = text === undefined ? new Map() : decodeBucket(text, name);
    this._buckets.set(b, m);
    this._rowsFrom(b, text);
    return m;
  }

  // A bucket's rows are those of its text (undefined: no file), none added or replaced since.
  private _rowsFrom(b: number, text: string | undefined): void {
    this._rows.set(b, { text: text === undefined ? '' : rowsOfBucketText(text), added: [], replaced: 0 });
  }

  // The same from a file's bytes (undefined: no file), decoded only if something needs the rows as text.
  private _rowsFromFile(b: number, file: Uint8Array | undefined): void {
    this._rows.set(b, file === undefined ? { text: '', added: [], replaced: 0 } : { file, added: [], replaced: 0 });
  }


  // A synchronous read: buckets are small, and 256 thread-pool round trips
  // cost more than the reads when the whole index is loaded.
  private _readBucket(name: string): string | undefined {
    const file = readBucketFile(name);
    return file && utf8(file);
  }

  /** The file that holds index bucket b. */
  bucketFile(b: number): string {
    // Asked for every bucket by each scan (the cache checks them all): joined once.
    const files = (this._bucketFiles ??= []);
    return (files[b] ??= `${this.stateDir}/index/${b.toString(16).padStart(2, '0')}`);
  }

  private _bucketFiles: string[] | undefined;

  /** Bucket b as held in memory when it has changes flushIndex has not written yet (its file then lags behind). */
  unflushedBucket(b: number): Map<string, IndexEntry> | undefined {
    return this._dirty.has(b) ? this._bucket(b) : undefined;
  }

  /**
   * Bucket b as this process last wrote it (its entries, and the CRC-32 of
   * the bytes written), while that is what its file holds: undefined for a
   * bucket it did not write, or changed again since.
   */
  writtenBucket(b: number): { entry: (path: string) => IndexEntry | undefined; entries: () => Map<string, IndexEntry>; sum: number } | undefined {
    const sum = this._writtenSums.get(b);
    if (sum === undefined || this._dirty.has(b)) return undefined;
    return { entry: (path) => this._entryOf(b, path), entries: () => this._bucket(b), sum };
  }

  /**
   * The entries addNew added to bucket b, while the bucket is written and
   * was never parsed: it then holds what it held when read, and these.
   */
  appendedOnly(b: number): { adds: ReadonlyMap<string, IndexEntry>; sum: number } | undefined {
    const d = this.deltaOf(b);
    return d && d.removed.size === 0 && d.adds.size > 0 ? d : undefined;
  }

  /**
   * How bucket b changed since markAppends (see _deltas), while it is
   * written: undefined for a bucket unchanged, unwritten, or appended to
   * before markAppends.
   */
  deltaOf(b: number): (BucketDelta & { sum: number }) | undefined {
    const sum = this._writtenSums.get(b);
    const d = this._deltas.get(b);
    if (sum === undefined || this._dirty.has(b) || d === null) return undefined;
    const u = this._unparsed.get(b);
    if (u) return { adds: u.adds, removed: new Set(), sum };
    return d && (d.adds.size > 0 || d.removed.size > 0) ? { ...d, sum } : undefined;
  }

  /**
   * From here on, deltaOf tells how a bucket changed: called when the scan
   * cache reads the buckets (its rows are what they held). Buckets appended
   * to unparsed before it are left out (their adds predate it).
   */
  markAppends(): void {
    this._deltas.clear();
    for (const b of this._unparsed.keys()) this._deltas.set(b, null);
  }

  /** The paths of bucket b this process has set or deleted, if any. */
  changedPaths(b: number): ReadonlySet<string> | undefined {
    return this._changedPaths.get(b);
  }

  /** The buckets this process has written or holds unwritten changes of. */
  touchedBuckets(): number[] {
    return [...new Set([...this._writtenSums.keys(), ...this._dirty])].sort((x, y) => x - y);
  }

  /**
   * Hands over a bucket just read from its file by someone else (the scan
   * cache), so it is not parsed twice; ignored once the bucket is loaded.
   */
  adoptBucket(b: number, m: Map<string, IndexEntry>, text: string): void {
    if (this._buckets.has(b) || this._unparsed.has(b) || this._sparse.has(b)) return;
    this._buckets.set(b, m);
    this._rowsFrom(b, text);
  }

  /** The index entry of a path. */
  async get(path: string): Promise<IndexEntry | undefined> {
    const b = bucketOf(path);
    // Just added to a bucket not parsed (a push's mkdir, asked for again to claim its record): known without parsing.
    return this._unparsed.get(b)?.adds.get(path) ?? this._entryOf(b, path);
  }

  // The entry of path in bucket b: from the parsed bucket, or else its row alone, found in the bucket's text.
  private _entryOf(b: number, path: string): IndexEntry | undefined {
    const m = this._buckets.get(b);
    if (m || this._unparsed.has(b)) return (m ?? this._bucket(b)).get(path);
    let s = this._sparse.get(b);
    if (!s) {
      const name = this.bucketFile(b);
      const text = this._readBucket(name);
      const count = text === undefined ? undefined : bucketCount(text);
      // No file (an empty bucket), or a header or end not as written: parsed whole (which says what is wrong).
      if (count === undefined || !text!.endsWith(']\n')) return this._bucket(b).get(path);
      this._rowsFrom(b, text);
      this._sparse.set(b, (s = { count, seen: new Map() }));
    }
    let e = s.seen.get(path);
    if (e !== undefined) return e ?? undefined;
    // Each row found alone scans the bucket's text: past a few, parsing it once costs less (a push of thousands of
    // removals looked up every row so, 0.6 s for 10,000).
    if (s.seen.size >= _SPARSE_ROWS) return this._bucket(b).get(path);
    s.seen.set(path, (e = rowOf(_rowsText(this._rows.get(b)!), path, this.bucketFile(b)) ?? null));
    return e ?? undefined;
  }

  /** Forgets every entry under directory path (written by flushIndex). */
  async forgetInside(path: string): Promise<void> {
    const prefix = `${path}/`;
    for (const p of [...(await this.all()).keys()]) if (p.startsWith(prefix)) await this.delete(p);
  }

  /** Records a path's entry (written by flushIndex). */
  async set(path: string, e: IndexEntry): Promise<void> {
    const b = bucketOf(path);
    if (this._sparse.has(b) && this._setRow(b, path, e)) return;
    const m = this._bucket(b);
    const r = this._rows.get(b);
    const had = m.has(path);
    this._noteSet(b, path, e, had);
    if (r && !had) r.added.push(path);
    // A changed row: replaced in the text, for the first few; past them the bucket is encoded whole.
    else if (r && !r.added.includes(path) && !_replaceRowIn(r, path, e)) this._rows.delete(b);
    m.set(path, e);
    this._dirty.add(b);
    this._changed(b, path);
  }

  // Replaces the row of path in a sparse bucket's text; false when the bucket has no row for path (or has had
  // many replaced), for set to parse it and go on the usual way.
  private _setRow(b: number, path: string, e: IndexEntry): boolean {
    if (!_replaceRowIn(this._rows.get(b)!, path, e)) return false;
    this._sparse.get(b)!.seen.set(path, e);
    this._noteSet(b, path, e, true);
    this._dirty.add(b);
    this._changed(b, path);
    return true;
  }

  /**
   * Records the entry of a path that the caller knows had none when its
   * scan began (a push's create): a bucket not read yet is then appended
   * to, not parsed (a push of many new files touches every bucket).
   */
  async addNew(path: string, e: IndexEntry): Promise<void> {
    const b = bucketOf(path);
    // Set by this process since (its file may no longer say what the scan saw): the usual way.
    if (this._buckets.has(b) || this._sparse.has(b) || this._changedPaths.get(b)?.has(path)) return this.set(path, e);
    let u = this._unparsed.get(b);
    if (!u) {
      // Its bytes as read: neither decoded here nor encoded again when written (~50 ms each way for 100,000 paths).
      const file = readBucketFile(this.bucketFile(b));
      const count = file === undefined ? 0 : bucketCount(file);
      if (count === undefined) return this.set(path, e); // says what is wrong with it
      u = { file, count, adds: new Map() };
      this._unparsed.set(b, u);
      this._rowsFromFile(b, file);
    }
    u.adds.set(path, e);
    this._rows.get(b)!.added.push(path);
    this._dirty.add(b);
    this._changed(b, path);
  }

  /** Forgets a path (written by flushIndex). */
  async delete(path: string): Promise<void> {
    const b = bucketOf(path);
    const m = this._bucket(b);
    if (m.delete(path)) {
      const d = this._delta(b);
      if (d && !d.adds.delete(path)) d.removed.add(path);
      this._dirty.add(b);
      this._rows.delete(b);
      this._changed(b, path);
    }
  }

  // A path set in a parsed bucket: one it held at markAppends is removed and added again.
  private _noteSet(b: number, path: string, e: IndexEntry, had: boolean): void {
    const d = this._delta(b);
    if (!d) return;
    if (had && !d.adds.has(path)) d.removed.add(path);
    d.adds.set(path, e);
  }

  private _delta(b: number): BucketDelta | null {
    let d = this._deltas.get(b);
    if (d === undefined) this._deltas.set(b, (d = { adds: new Map(), removed: new Set() }));
    return d;
  }

  private _changed(b: number, path: string): void {
    const paths = this._changedPaths.get(b);
    if (paths) paths.add(path);
    else this._changedPaths.set(b, new Set([path]));
  }

  /** Loads every bucket and returns all entries. */
  async all(): Promise<Map<string, IndexEntry>> {
    const out = new Map<string, IndexEntry>();
    for (let b = 0; b < BUCKETS; b++) for (const [p, e] of this._bucket(b)) out.set(p, e);
    return out;
  }

  /**
   * Sets aside every index bucket that cannot be read (damaged, or not a
   * file), renamed to NAME.damaged-<ms> beside it, never removed; the
   * index then holds nothing of those paths, which a resync compares by
   * hash. Returns the buckets' numbers (for pull --resync, which the error
   * that names a damaged bucket recommends).
   */
  setAsideDamagedBuckets(): number[] {
    const out: number[] = [];
    for (let b = 0; b < BUCKETS; b++) {
      try {
        this._bucket(b);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code !== Codes.CORRUPT) throw err;
        const name = this.bucketFile(b);
        renameSync(name, `${name}.damaged-${Date.now()}`);
        this._unparsed.delete(b);
        this._sparse.delete(b);
        this._buckets.set(b, new Map());
        this._rowsFrom(b, undefined);
        out.push(b);
      }
    }
    return out;
  }

  /** Writes changed buckets durably: all temp files synced, then renamed, then one directory fsync. */
  async flushIndex(): Promise<void> {
    if (this._dirty.size === 0) return;
    const dir = join(this.stateDir, 'index');
    // Written with synchronous calls (a thread-pool round trip per call costs more than writing a bucket); on a
    // disk their fdatasyncs then go through the pool together, which costs about one of them, not one each.
    this._syncCostsIo ??= fsyncCostsIo(dir);
    const together = this._syncCostsIo && this._dirty.size > 1;
    const written: { fd: number; tmp: string; name: string }[] = [];
    try {
      for (const b of this._dirty) {
        const name = join(dir, b.toString(16).padStart(2, '0'));
        const tmp = tempNameFor(name);
        const fd = openSync(tmp, 'wx', 0o644);
        written.push({ fd, tmp, name });
        writeFileSync(fd, this._encode(b));
        if (!together) fdatasyncSync(fd);
      }
      if (together) await inParallel(written, 64, (w) => fsyncFd(w.fd, true));
    } catch (err) {
      // A full disk: no half-written bucket is left behind, and none is renamed in.
      for (const w of written) {
        closeSync(w.fd);
        rmSync(w.tmp, { force: true });
      }
      throw err;
    }
    for (const w of written) closeSync(w.fd);
    for (const w of written) renameSync(w.tmp, w.name); // (a temp left by a failure here is swept at the next start)
    fsyncDirSync(dir);
    this._flushed();
  }

  // A bucket's bytes: its old rows and the rows added since, or all of it encoded again.
  private _encode(b: number): Uint8Array {
    // (A sparse bucket had rows replaced in its text, none added: its count stays.)
    const s = this._sparse.get(b);
    const u = this._unparsed.get(b);
    const m = s ? new Map<string, IndexEntry>() : u ? u.adds : this._buckets.get(b)!;
    const r = this._rows.get(b);
    const added = r && r.added.length > 0 ? encodeRows(r.added.map((p) => [p, m.get(p)!] as [string, IndexEntry])) : '';
    const count = s ? s.count : u ? u.count + u.adds.size : m.size;
    if (r?.file !== undefined) {
      const file = appendedBucket(r.file, count, added);
      this._encodedLast.set(b, { file, sum: crc32(file) });
      return file;
    }
    let text: string;
    if (!r) text = encodeBucket(m);
    else {
      const rows = _rowsText(r);
      text = bucketText(count, rows === '' ? added : added === '' ? rows : `${rows},${added}`);
    }
    const bytes = Buffer.from(text, 'utf8');
    this._encodedLast.set(b, { text, sum: crc32(bytes) });
    return bytes;
  }

  // What the written buckets hold now is what their next append starts from.
  private _flushed(): void {
    for (const b of this._dirty) {
      const written = this._encodedLast.get(b);
      if (written !== undefined) {
        if (written.file) this._rowsFromFile(b, written.file);
        else this._rowsFrom(b, written.text);
        this._writtenSums.set(b, written.sum);
      } else {
        this._rows.delete(b);
        this._writtenSums.delete(b);
      }
    }
    this._encodedLast.clear();
    this._dirty.clear();
  }

  // Indexes what the placing list names where the index lags behind and the disk holds exactly what was placed
  // (a file the user changed since stays as it is: theirs). Then the list goes.
  private async _finishPlacing(): Promise<void> {
    const file = join(this.stateDir, 'placing');
    const text = readFileOrNot(file);
    if (text === undefined) return;
    let placed: Placed[] = [];
    try {
      placed = utf8(text).split('\n').filter((l) => l !== '').map((l) => {
        const [path, type, version, hash, size, target, mode] = JSON.parse(l) as [string, number, number, string, number, string, number | undefined];
        return { path, type, version, hash, size, target, mode };
      });
    } catch {
      placed = []; // damaged (never written whole, but a disk can fail): nothing to finish
    }
    let indexed = 0;
    const underRealDirs = this._realDirs();
    for (const x of placed) {
      if (typeof x.path !== 'string' || pathProblem(x.path) !== undefined) continue;
      const idx = await this.get(x.path);
      if (idx && idx.version >= x.version) continue;
      if (!underRealDirs(x.path)) continue;
      const abs = join(this.root, x.path);
      const st = lstatSync(abs, { throwIfNoEntry: false });
      if (!st) continue;
      const same = x.type === EntryType.FILE ? st.isFile() && st.size === x.size && toHex(hashFileSync(abs)) === x.hash
        : x.type === EntryType.DIR ? st.isDirectory()
        : x.type === EntryType.SYMLINK && st.isSymbolicLink() && readlinkSync(abs) === x.target;
      if (!same) continue;
      // The server's permissions, as the pull gave them (the set-id bits the disk has, as a pull indexes them): a
      // chmod made here since stays a change to push, as it would be had the pull finished.
      const mode = x.type !== EntryType.SYMLINK && typeof x.mode === 'number' ? (st.mode & 0o7000) | (x.mode & 0o777) : st.mode & 0o7777;
      await this.set(x.path, {
        type: x.type as IndexEntry['type'], version: x.version, hash: x.type === EntryType.FILE ? x.hash : '', size: x.type === EntryType.FILE ? st.size : 0, mode,
        mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino, target: x.type === EntryType.SYMLINK ? x.target : '',
        ...(x.type === EntryType.FILE && this.config.mode === 'on-demand' && x.path !== IGNORE_FILE ? { fetchedMs: Date.now() } : {}),
      });
      indexed++;
    }
    if (indexed > 0) await this.flushIndex();
    this.clearPlacing();
  }

  // Whether each parent of a path is a real directory, looked up once per directory: lstat follows a link met before
  // the last name, and what lies beyond one is not the replica's (the user may have replaced a directory by a link).
  private _realDirs(): (path: string) => boolean {
    const realDirs = new Map<string, boolean>([['', true]]);
    const underRealDirs = (p: string): boolean => {
      const dir = parentOf(p);
      let ok = realDirs.get(dir);
      if (ok === undefined) {
        ok = underRealDirs(dir) && lstatSync(join(this.root, dir), { throwIfNoEntry: false })?.isDirectory() === true;
        realDirs.set(dir, ok);
      }
      return ok;
    };
    return underRealDirs;
  }

  /** Records directories about to receive temp files, so a crash's leftovers can be swept. */
  async noteTempDirs(dirs: Iterable<string>): Promise<void> {
    const file = join(this.stateDir, 'inflight');
    const cur = existsSync(file) ? _tempDirList(readFileOrNot(file)) : [];
    const set = new Set([...cur, ...dirs]);
    writeFileSync(file, JSON.stringify([...set]));
  }

  /** Forgets the temp-file directories once a run has renamed or removed all its temp files. */
  async clearTempDirs(): Promise<void> {
    rmSync(join(this.stateDir, 'inflight'), { force: true });
  }

  /**
   * Records what a pull is about to put in the tree (files, directories,
   * links, as the server has them), until clearPlacing: a run killed
   * between putting them there and writing the index leaves them for
   * sweepTemps to index, instead of untracked (a push would send back what
   * the server removed since). Written whole under a temp name, renamed.
   */
  notePlacing(placed: Placed[]): void {
    const file = join(this.stateDir, 'placing');
    const tmp = tempNameFor(file);
    writeFileSync(tmp, placed.map((x) => JSON.stringify([x.path, x.type, x.version, x.hash, x.size, x.target, x.mode])).join('\n') + '\n');
    renameSync(tmp, file);
  }

  /** Forgets the placing list once the index holds what it lists. */
  clearPlacing(): void {
    rmSync(join(this.stateDir, 'placing'), { force: true });
  }

  /**
   * Finishes what an interrupted run left: indexes what a killed pull put
   * in the tree (see notePlacing) where the index lags behind it and the
   * disk holds just that, then removes temp files left in the tree.
   * Returns the temp files removed.
   */
  async sweepTemps(): Promise<number> {
    await this._finishPlacing();
    const file = join(this.stateDir, 'inflight');
    if (!existsSync(file)) return 0; // the common case, without an exception
    const dirs = _tempDirList(readFileOrNot(file));
    const underRealDirs = this._realDirs();
    let n = 0;
    for (const d of dirs) {
      // (Never swept through a link: what lies beyond one is not the replica's.)
      if (d !== '' && !underRealDirs(`${d}/x`)) continue;
      const abs = join(this.root, d);
      let names: string[];
      try {
        names = await readdir(abs);
      } catch {
        continue;
      }
      for (const name of names) {
        if (name.startsWith(TMP_PREFIX)) {
          await rm(join(abs, name), { force: true, recursive: true });
          n++;
        }
      }
    }
    await rm(file, { force: true });
    return n;
  }
}

/** Something a pull puts in the tree, as the server has it (see Replica.notePlacing). */
export interface Placed {
  path: string;
  /** EntryType code: FILE, DIR or SYMLINK. */
  type: number;
  version: number;
  /** Hex SHA-256 of a file, '' otherwise. */
  hash: string;
  size: number;
  target: string;
  /** The mode the server has (and the pull gives a file or directory); absent in a list from an older run. */
  mode?: number;
}

/** How an index bucket changed (see Replica.deltaOf): paths it held that went or changed, and entries set since. */
export interface BucketDelta {
  adds: Map<string, IndexEntry>;
  removed: Set<string>;
}

/**
 * Runs fn on a freshly opened replica under its lock (fresh index and HEAD:
 * another run may have changed them), waiting while another holder has it.
 */
export async function withReplicaLock(dir: string, signal: AbortSignal | undefined, fn: (r: Replica) => Promise<void>, pollMs = 200, openOpts: { rebuildHead?: boolean } = {}): Promise<void> {
  for (;;) {
    const replica = await Replica.open(dir, openOpts);
    try {
      await replica.lock();
    } catch (err) {
      if (err instanceof ImzError && err.code === Codes.LOCKED && signal?.aborted !== true) {
        await new Promise((r) => setTimeout(r, pollMs));
        continue;
      }
      throw err;
    }
    try {
      await replica.sweepTemps();
      await fn(replica);
      return;
    } finally {
      await replica.unlock();
    }
  }
}

function _alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}


// The directories a list of temp-file directories names (.imz/inflight, bytes or undefined): a damaged list names
// none (its temp files stay until removed by hand), and a name that is not a path inside the replica is never swept.
function _tempDirList(bytes: Uint8Array | undefined): string[] {
  let v: unknown;
  try {
    v = bytes && JSON.parse(utf8(bytes));
  } catch {
    return [];
  }
  return Array.isArray(v) ? v.filter((d): d is string => typeof d === 'string' && (d === '' || pathProblem(d) === undefined)) : [];
}

// A state file's JSON, or the error that kept it from being read or parsed.
function _stateFile(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

function _isConfig(c: unknown): c is ReplicaConfig {
  const x = c as Partial<ReplicaConfig> | null;
  return typeof x === 'object' && x !== null && typeof x.format === 'number' && typeof x.remote === 'string' && typeof x.replicaId === 'string';
}

function _isHead(h: unknown): h is Head {
  const x = h as Partial<Head> | null;
  return typeof x === 'object' && x !== null && typeof x.serverId === 'string' && Number.isSafeInteger(x.cursor) && x.cursor! >= 0
    && (x.owed === undefined || (Array.isArray(x.owed) && x.owed.every((p) => pathProblem(p) === undefined)));
}

/** Rows of a bucket replaced in its text before it is encoded whole instead (each replacement copies the text). */
const _REPLACED_MAX = 8;

/** Rows of a sparse bucket found one by one in its text before it is parsed whole instead (each scans the text). */
const _SPARSE_ROWS = 4;

/** A bucket's rows (see Replica._rows): text, or a file's bytes whose rows are the current ones; the paths added since. */
interface _Rows {
  text?: string;
  file?: Uint8Array;
  added: string[];
  replaced: number;
}

// Replaces the row of path in r's text by e's, unless r has had _REPLACED_MAX replaced or holds no row for path.
function _replaceRowIn(r: _Rows, path: string, e: IndexEntry): boolean {
  if (r.replaced >= _REPLACED_MAX) return false;
  const rows = replaceRow(_rowsText(r), path, encodeRows([[path, e]]));
  if (rows === undefined) return false;
  r.text = rows;
  r.file = undefined; // no longer what the file says
  r.replaced++;
  return true;
}

// The rows as text (decoded from the file's bytes at the first need).
function _rowsText(r: _Rows): string {
  return (r.text ??= rowsOfBucketText(utf8(r.file!)));
}

/**
 * The bytes of index bucket file name (undefined: none). One that is a
 * directory, or cannot be read, is IMZ_CORRUPT naming it, as a damaged
 * one is (pull --resync sets it aside).
 */
export function readBucketFile(name: string): Buffer | undefined {
  try {
    return readFileOrNot(name);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EACCES') throw err;
    throw new ImzError(Codes.CORRUPT, `cannot read replica index: ${name} is ${code === 'EISDIR' ? 'a directory' : 'not readable'} (run \`imz pull --resync\` to rebuild it)`);
  }
}
