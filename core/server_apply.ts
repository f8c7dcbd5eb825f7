import { createHash } from 'node:crypto';
import { type Dirent, type Stats, chmodSync, closeSync, constants as fsc, copyFileSync, existsSync, fchmodSync, fstatSync, fsyncSync, futimesSync, lstatSync, mkdirSync, openSync, readSync, readdirSync, readlinkSync, renameSync, rmSync, rmdirSync, statSync, statfsSync, symlinkSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { type BlobPiece, Change, type Entry, EntryType, type Operation, OpKind, type OpResult, OpStatus } from '../protocol/messages.ts';
import { syncFs, syncFsUsable } from './sync_fs.ts';
import { fsErrorPlace, fsyncCostsIo, fsyncDir, fsyncFd, inParallel, tempNameFor } from './atomic_fs.ts';
import { freeName, keepName } from './conflicts.ts';
import { POLICIES, type Policy } from './policy.ts';
import { hashBytes, hashFileSync, sameHash, toHex } from './hash.ts';
import { type StatFacts, lstatFacts } from './fast_lstat.ts';
import { TMP_PREFIX, checkPath, inDir, parentOf, pathProblem } from './paths.ts';
import type { ServerScanner } from './server_scanner.ts';
import { type PendingChange, type ServerState, type TableEntry, tableToEntry } from './server_state.ts';
import { fsEntryFromStats, sameMtime, utimeSeconds } from './tree_scan.ts';

/** Largest blob staged through PUT_BLOB. */
const MAX_BLOB = 1024 ** 4;
/** Largest whole content held in memory until its store writes it beside its file (see _hold). */
const HOLD_ONE = 256 * 1024;
/** Bytes and contents held in memory at most: beyond them uploads are staged on disk. */
const HOLD_BYTES = 64 * 1024 * 1024;
const HOLD_COUNT = 20_000;
/** How long a held content may wait for its store before it is staged (an abandoned push, a refused store). */
const HOLD_MS = 60_000;
/** Free space kept beyond the held contents before uploads are held rather than staged (see _roomFor). */
const ROOM_SPARE = 16 * 1024 * 1024;
/** Stores written ahead together (see _writeAhead). */
const AHEAD_MAX = 4096;
/** Bytes written ahead together at most (see _writeAhead). */
const AHEAD_BYTES = 64 * 1024 * 1024;
/** Temps written ahead together from which one syncfs makes them durable instead of an fsync each (see _writeAhead). */
const SYNCFS_FROM = 64;

/** Bounds and hooks of a Reintegrator (the defaults suit a server; tests narrow them). */
export interface ReintegratorOptions {
  /** Bytes of uploads held in memory at most (0: none, every upload staged). */
  holdBytes?: number;
  /** How long a held content waits for its store before it is staged. */
  holdMs?: number;
  /** Temps written ahead together from which one syncfs makes them durable instead of an fsync each (Infinity: never). */
  syncfsFrom?: number;
  /** Told of each window written ahead: its files, the directories made for it, how they were made durable, the time it took. */
  onWriteAhead?: (e: { files: number; dirs: number; syncfs: boolean; ms: number }) => void;
}
/** Most blobs in one PUT_BLOBS request (as many as one query may ask about). */
const MAX_BATCH = 10000;

/**
 * The server side of disconnected operation: stages uploaded content by hash
 * (PUT_BLOB), then applies a replica's operations in order (REINTEGRATE):
 * each is checked against the path's current version, applied atomically
 * (temp file, fsync, rename), journalled with its origin, and answered.
 * A retried operation (same replica id and seq) is never applied twice.
 */
export class Reintegrator {
  readonly root: string;
  readonly state: ServerState;
  readonly scanner: ServerScanner;
  readonly stagingDir: string;
  readonly displacedDir: string;
  private _blobLocks = new Map<string, Promise<unknown>>();
  private _dirsToSync = new Set<string>();
  private _stagingReady = false;
  /** Parent directories checked (real directories, not links) during the current batch. */
  private _checkedDirs = new Set<string>();
  /**
   * Staged blobs this process wrote and checked against their hash: only a
   * crash can tear them, and a crash empties this set, so they are moved
   * into the tree without being read again. Others are checked when used.
   */
  private _verified = new Set<string>();
  /**
   * What the staging directory holds, read once and then kept up to date
   * (only this server writes there): saves a probe per blob. A name missing
   * here means the content is sent again at worst; a name present is still
   * checked on disk.
   */
  private _listing: { staged: Set<string>; parts: Set<string> } | undefined;
  /** Whether staged blobs can be renamed into the tree (the state dir on the same file system). */
  private _sameFs: boolean | undefined;
  /** The lstat _agrees made last, reused by _apply for the same path. */
  private _seen: { path: string; kind: _Kind | undefined } | undefined;
  /**
   * Verified staged blobs the batch being applied will rename into the tree,
   * given their mode and time and fsynced ahead (_prepare), with their stat.
   */
  private _prepared = new Map<string, _Ready>();
  /**
   * Staged blobs this process wrote with the mode and time a client said
   * the store they are for gives (PUT_BLOBS's hint), with their stat: where
   * an fsync costs nothing, that store only renames the blob in.
   */
  private _hinted = new Map<string, _Ready>();
  /** Whether an fsync in staging does any I/O (not on tmpfs); read on first use. */
  private _syncCostsIo: boolean | undefined;
  /** Whether an fsync of a directory of the served tree does any I/O; read on first use. */
  private _treeSyncs: boolean | undefined;
  /**
   * Whole contents (checked against their hash) held in memory until a store
   * writes them beside its file, where the tree is on a disk: see _hold.
   */
  private _held = new Map<string, { bytes: Uint8Array; since: number }>();
  private _heldBytes = 0;
  /** Held contents a store of the current batch wrote into the tree: let go after the batch. */
  private _heldUsed = new Set<string>();
  /** Temp files in their targets' directories, written and made durable ahead for stores of the current batch, by path. */
  private _ahead = new Map<string, _Ahead>();
  /** Directories made ahead under a temp name for MAKEDIRs of the current batch (see _writeAhead): path → temp name. */
  private _aheadDirs = new Map<string, string>();
  /** Paths of the current batch a temp was written ahead for (or tried): not written ahead again (see _writeAhead). */
  private _tried = new Set<string>();
  /** The served tree's device (a syncfs of it covers only the files on it). */
  private _rootDev: number | undefined;
  /** The batch being applied, and the index of the operation being applied in it (for _writeAhead). */
  private _batch: Operation[] = [];
  private _at = 0;
  /** The index in the batch of the last operation the current window covers (-1: none written ahead since the last drop). */
  private _aheadUntil = -1;

  /** Bytes of uploads held in memory at most (see _hold); 0 stages every upload. */
  private readonly _holdBytes: number;
  /** How long a held content waits for its store before it is staged. */
  private readonly _holdMs: number;
  private readonly _syncfsFrom: number;
  private readonly _onWriteAhead: ReintegratorOptions['onWriteAhead'];

  constructor(root: string, state: ServerState, scanner: ServerScanner, opts: ReintegratorOptions = {}) {
    this._holdBytes = opts.holdBytes ?? HOLD_BYTES;
    this._holdMs = opts.holdMs ?? HOLD_MS;
    this._syncfsFrom = opts.syncfsFrom ?? SYNCFS_FROM;
    this._onWriteAhead = opts.onWriteAhead;
    this.root = root;
    this.state = state;
    this.scanner = scanner;
    this.stagingDir = join(state.dir, 'staging');
    this.displacedDir = join(state.dir, 'displaced');
  }

  /**
   * Removes staged uploads nobody finished or used for a week (an abandoned
   * push), and temp files a killed server left. Runs before serving.
   */
  async sweepStaging(maxAgeMs = 7 * 24 * 3600 * 1000): Promise<number> {
    let names: string[];
    try {
      names = readdirSync(this.stagingDir);
    } catch {
      return 0;
    }
    let n = 0;
    const now = Date.now();
    this._listing = undefined;
    for (const name of names) {
      const f = inDir(this.stagingDir, name);
      const st = lstatSync(f, { throwIfNoEntry: false });
      // A temp file (a small upload being written) is what a killed server left: the sweep runs before serving.
      // By ctime alone: a blob staged with a hint has its file's mtime, which a client chose (years old, or in the
      // future: never swept); the ctime says when this server last wrote, chmodded or touched it.
      if (st && (name.startsWith(TMP_PREFIX) || now - st.ctimeMs > maxAgeMs)) {
        rmSync(f, { force: true });
        n++;
      }
    }
    return n;
  }

  /** Handles one PUT_BLOB piece (or query); pieces of one blob are serialised. */
  putBlob(req: { hash: Uint8Array; size: number; offset: number; data: Uint8Array; last: boolean }): Promise<{ present: boolean; have: number }> {
    if (req.hash.length !== 32) throw new ImzError(Codes.PROTOCOL, 'cannot stage content: the hash is not a SHA-256');
    if (!(req.size >= 0 && req.size <= MAX_BLOB)) throw new ImzError(Codes.PROTOCOL, 'cannot stage content: bad size');
    const hex = toHex(req.hash);
    const prev = this._blobLocks.get(hex) ?? Promise.resolve();
    const run = prev.then(() => this._putBlob(hex, req)).catch((err) => {
      throw this._fsError(err, 'stage the upload', 'push again');
    });
    const tail = run.catch(() => {});
    this._blobLocks.set(hex, tail);
    void tail.then(() => { if (this._blobLocks.get(hex) === tail) this._blobLocks.delete(hex); });
    return run;
  }

  private async _putBlob(hex: string, req: { hash: Uint8Array; size: number; offset: number; data: Uint8Array; last: boolean }): Promise<{ present: boolean; have: number }> {
    if (!this._stagingReady) {
      await mkdir(this.stagingDir, { recursive: true });
      this._stagingReady = true;
    }
    const full = inDir(this.stagingDir, hex);
    const part = `${full}.part`;
    if (req.offset === 0 && req.last && req.data.length === req.size) {
      _checkWhole(req.data, req.hash);
      if (!this._hold(hex, req.data, this._roomFor(req.data.length))) this._stageWhole(hex, req.data);
      return { present: true, have: req.size };
    }
    try {
      await stat(full);
      return { present: true, have: req.size };
    } catch { /* not staged yet */ }
    let have = 0;
    try {
      have = (await stat(part)).size;
    } catch { /* nothing yet */ }
    if (req.data.length === 0 && !req.last) {
      // Every byte is there but the part was never checked and renamed (a
      // server killed right after the last piece): finish it now, since the
      // client, told it has nothing left to send, sends no last piece.
      if (have === req.size && have > 0) {
        if (await this._finishPart(hex, part, full)) return { present: true, have };
        return { present: false, have: 0 };
      }
      return { present: false, have };
    }
    if (req.offset === 0 && req.last && have > 0) {
      // A whole small blob sent in one piece over an unfinished earlier try: start again.
      await rm(part, { force: true });
      this._staging().parts.delete(hex);
      have = 0;
    }
    if (req.offset !== have) return { present: false, have }; // the client resends from `have`
    if (have + req.data.length > req.size) throw new ImzError(Codes.PROTOCOL, 'cannot stage content: more bytes than the declared size');
    this._staging().parts.add(hex);
    const fh = await open(part, 'a');
    try {
      let off = 0;
      while (off < req.data.length) {
        const { bytesWritten } = await fh.write(req.data, off, req.data.length - off);
        if (bytesWritten === 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        off += bytesWritten;
      }
      if (req.last) await fh.datasync();
    } catch (err) {
      // A piece written in part (a full disk): cut it, so the staged length
      // stays what the client was told and the upload resumes from there.
      await fh.truncate(have).catch(() => {});
      throw err;
    } finally {
      await fh.close();
    }
    have += req.data.length;
    if (!req.last) return { present: false, have };
    if (have !== req.size) throw new ImzError(Codes.PROTOCOL, `cannot stage content: ${have} bytes received, ${req.size} declared`);
    if (!(await this._finishPart(hex, part, full))) {
      throw new ImzError(Codes.HASH_MISMATCH, 'cannot stage content: the bytes received do not match their SHA-256 (upload again)');
    }
    return { present: true, have };
  }

  /**
   * Handles PUT_BLOBS: whole contents, each staged as a one-piece PUT_BLOB.
   * All are checked before any is written: a malformed or mismatching blob
   * fails the request and stages nothing.
   */
  async putBlobs(blobs: BlobPiece[]): Promise<{ present: boolean; have: number }[]> {
    if (blobs.length > MAX_BATCH) throw new ImzError(Codes.PROTOCOL, `cannot stage content: more than ${MAX_BATCH} blobs in one request`);
    const hexes: string[] = [];
    for (const b of blobs) {
      if (b.hash.length !== 32) throw new ImzError(Codes.PROTOCOL, 'cannot stage content: the hash is not a SHA-256');
      if (b.offset !== 0 || !b.last || b.size !== b.data.length || (b.query?.length ?? 0) > 0) throw new ImzError(Codes.PROTOCOL, 'cannot stage content: PUT_BLOBS takes whole contents only (offset 0, last, size bytes of data)');
      const hex = toHex(b.hash);
      _checkWhole(b.data, b.hash);
      hexes.push(hex);
    }
    const room = this._roomFor(blobs.reduce((n, b) => n + b.data.length, 0));
    try {
      if (!this._stagingReady) {
        await mkdir(this.stagingDir, { recursive: true });
        this._stagingReady = true;
      }
      for (let i = 0; i < blobs.length; i++) {
        const hex = hexes[i]!;
        // A piece-wise upload of the same content in progress: wait for it, in order.
        if (this._blobLocks.has(hex)) await this.putBlob(blobs[i]!);
        else if (!this._hold(hex, blobs[i]!.data, room)) this._stageWhole(hex, blobs[i]!.data, _hintOf(blobs[i]!));
      }
    } catch (err) {
      throw this._fsError(err, 'stage the upload', 'push again');
    }
    return blobs.map((b) => ({ present: true, have: b.size }));
  }

  // Holds a whole small content, already checked against its hash, in memory
  // instead of staging it, where the tree is on a disk: its store then writes
  // it beside its file, as rsync does, not into the one staging directory.
  // On a file system that keeps no journal (ext4 without one), every file
  // created in a directory whose block group holds inodes deleted in the last
  // minutes scans past all of them first: 10,000 uploads after a large
  // deletion near the state directory spent seconds of kernel time in that.
  // Beyond a bound uploads are staged as before; what is held is staged when
  // the server stops. One a crash loses is uploaded again (its store says the
  // content is missing, and the next push sends it).
  // False when the content is to be staged as before.
  // room: what _roomFor said for the request (false also where nothing is held: a memory-backed tree).
  private _hold(hex: string, data: Uint8Array, room: boolean): boolean {
    if (!room || data.length > HOLD_ONE) return false;
    if (this._held.has(hex)) {
      // Sent again while a batch writes it into the tree: kept for the store it is sent for.
      this._heldUsed.delete(hex);
      return true;
    }
    if (this._heldBytes + data.length > this._holdBytes || this._held.size >= HOLD_COUNT) this._stageOld();
    // Beyond the bound, staged: what is held is what stores will ask for first (uploads run ahead of them).
    if (this._heldBytes + data.length > this._holdBytes || this._held.size >= HOLD_COUNT) return false;
    // A copy: the bytes are a view into the request's frame (protobufjs, Buffer#slice), which it would keep alive.
    const own = new Uint8Array(data);
    this._held.set(hex, { bytes: own, since: Date.now() });
    this._heldBytes += own.length;
    return true;
  }

  // True when uploads may be held (a tree on a disk, holding not turned off) and the served tree's file system
  // has room for the contents held and bytes more: a full disk is then told once, when the upload is staged
  // ("cannot stage the upload: no space left"), not once per store that cannot write its file. (One statfs a
  // request; unknown counts as room.)
  private _roomFor(bytes: number): boolean {
    this._treeSyncs ??= fsyncCostsIo(this.root);
    if (this._holdBytes <= 0 || !this._treeSyncs) return false;
    try {
      const fs = statfsSync(this.root);
      return fs.bavail * fs.bsize >= this._heldBytes + bytes + ROOM_SPARE;
    } catch {
      return true;
    }
  }

  // Lets a held content go.
  private _unhold(hex: string): void {
    const h = this._held.get(hex);
    if (h === undefined) return;
    this._held.delete(hex);
    this._heldBytes -= h.bytes.length;
  }

  /** Stages every content held in memory (before the server stops: an upload in progress then resumes). */
  stageHeld(): void {
    this._stageOld(Infinity);
  }

  // Stages the held contents that waited longer than HOLD_MS for their store (oldest first, as they were held):
  // what a refused store or an abandoned push left would otherwise take the memory for good.
  private _stageOld(now = Date.now()): void {
    for (const [hex, h] of this._held) {
      if (now - h.since < this._holdMs) return;
      try {
        this._stageWhole(hex, h.bytes);
      } catch {
        return; // (a full disk): kept in memory
      }
      this._unhold(hex);
    }
  }

  // Stages a whole content already checked against its hash, with
  // synchronous calls: many thread-pool round trips per small blob would
  // cost more than the work. Written in place, not fsynced: a blob staged by
  // an earlier process (which a kill or a crash can tear) is checked again
  // when it is applied, and the applied file is fsynced.
  // With a hint (see BlobRequest), where an fsync costs nothing (tmpfs),
  // the blob is given its store's mode and time as it is written: that
  // store then only renames it in, instead of opening it again for them.
  // (On a disk _prepare opens it anyway, to fsync it.)
  private _stageWhole(hex: string, data: Uint8Array, hint?: _Ready): void {
    this._syncCostsIo ??= fsyncCostsIo(this.stagingDir);
    if (this._syncCostsIo) hint = undefined;
    const listing = this._staging(); // read before the first write, so it sees what earlier processes left
    // Staged and checked by this process, not used yet: the bytes are there
    // (and may be being made ready by the batch being applied: left alone).
    if (this._verified.has(hex) && listing.staged.has(hex)) return;
    // Content an earlier process staged is written again: the same bytes cost less than reading them back to check.
    const full = inDir(this.stagingDir, hex);
    this._hinted.delete(hex);
    const fd = openSync(full, 'w', hint?.mode ?? 0o600);
    let ready: _Ready | undefined;
    try {
      _writeAllSync(fd, data);
      if (hint) ready = _withAttrs(fd, hint);
    } catch (err) {
      // A full disk: no torn blob is left behind.
      closeSync(fd);
      listing.staged.delete(hex);
      rmSync(full, { force: true });
      throw err;
    }
    closeSync(fd);
    if (ready) this._hinted.set(hex, ready);
    listing.staged.add(hex);
    if (listing.parts.delete(hex)) _unlinkQuiet(`${full}.part`);
    this._trust(hex);
  }

  // Checks a complete part against its hash: renamed into place (durable) when
  // it matches, removed when it does not. True when it matched.
  private async _finishPart(hex: string, part: string, full: string): Promise<boolean> {
    const h = createHash('sha256');
    const rf = await open(part, 'r');
    try {
      for await (const chunk of rf.createReadStream({ autoClose: false })) h.update(chunk as Buffer);
      await rf.datasync();
    } finally {
      await rf.close().catch(() => {});
    }
    if (h.digest('hex') !== hex) {
      await rm(part, { force: true });
      this._staging().parts.delete(hex);
      return false;
    }
    await rename(part, full);
    this._prepared.delete(hex); // another file now
    this._hinted.delete(hex);
    const listing = this._staging();
    listing.parts.delete(hex);
    listing.staged.add(hex);
    this._trust(hex);
    return true;
  }

  // The staging directory's contents (blobs and unfinished parts), read on first use.
  private _staging(): { staged: Set<string>; parts: Set<string> } {
    if (this._listing) return this._listing;
    const staged = new Set<string>();
    const parts = new Set<string>();
    let names: string[] = [];
    try {
      names = readdirSync(this.stagingDir);
    } catch { /* nothing staged yet */ }
    for (const n of names) {
      if (/^[0-9a-f]{64}$/.test(n)) staged.add(n);
      else if (/^[0-9a-f]{64}\.part$/.test(n)) parts.add(n.slice(0, 64));
    }
    this._listing = { staged, parts };
    return this._listing;
  }

  // True when staging and the served tree share a file system (a rename between them works).
  private _sameFileSystem(): boolean {
    if (this._sameFs === undefined) {
      try {
        this._sameFs = statSync(this.stagingDir).dev === statSync(this.root).dev;
      } catch {
        return false;
      }
    }
    return this._sameFs;
  }

  // Forgets a staged blob that has gone into the tree.
  private _unstaged(hex: string): void {
    this._verified.delete(hex);
    this._prepared.delete(hex);
    this._hinted.delete(hex);
    this._staging().staged.delete(hex);
  }

  // Remembers a staged blob as checked (bounded: an unused one is only checked again when applied).
  private _trust(hex: string): void {
    if (this._verified.size >= 1_000_000) this._verified.clear();
    this._verified.add(hex);
  }

  /** Which of these contents the server holds already, staged or somewhere in the tree. */
  holds(hashes: Uint8Array[]): boolean[] {
    if (hashes.length > 10000) throw new ImzError(Codes.PROTOCOL, 'cannot answer: more than 10000 hashes in one query');
    const staged = this._staging().staged;
    return hashes.map((h) => {
      if (h.length !== 32) return false;
      const hex = toHex(h);
      if (this._held.has(hex)) return true;
      const held = staged.has(hex) && (this._verified.has(hex) ? existsSync(inDir(this.stagingDir, hex)) : this._stagedIntact(hex, h));
      return held || this.state.pathWithHash(Buffer.from(h).toString('latin1')) !== undefined;
    });
  }

  // A blob an earlier process staged (written in place: a kill can have torn
  // it) is checked against its hash before a client is told not to send it.
  private _stagedIntact(hex: string, hash: Uint8Array): boolean {
    const file = inDir(this.stagingDir, hex);
    try {
      if (_hashIs(file, hash)) {
        this._trust(hex);
        return true;
      }
    } catch {
      return false; // gone
    }
    _unlinkQuiet(file);
    this._staging().staged.delete(hex);
    return false;
  }

  // Copies content the tree already holds into tmp, checking it on the way
  // (the file may have changed since it was journalled). False if it cannot.
  private _copyFromTree(hash: Uint8Array, tmp: string): boolean {
    const src = this.state.pathWithHash(Buffer.from(hash).toString('latin1'));
    if (src === undefined) return false;
    try {
      copyFileSync(inDir(this.root, src), tmp, fsc.COPYFILE_FICLONE);
    } catch (err) {
      // The source went away meanwhile: the content is to be uploaded again. A full disk or a refusal is the error.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return false;
      _unlinkQuiet(tmp);
      throw err;
    }
    if (_hashIs(tmp, hash)) return true;
    rmSync(tmp, { force: true });
    return false;
  }

  /** Applies operations in order; one result each. Serialised with the scanner. */
  reintegrate(replicaId: string, ops: Operation[], policy: string): Promise<OpResult[]> {
    if (!/^[0-9a-f-]{36}$/.test(replicaId)) throw new ImzError(Codes.PROTOCOL, 'cannot reintegrate: missing or malformed replica id');
    const pol = (POLICIES as readonly string[]).includes(policy) ? (policy as Policy) : 'manual';
    return this.scanner.exclusive(async () => {
      const results: OpResult[] = [];
      try {
        await this._prepare(ops);
        this._batch = ops;
        for (let i = 0; i < ops.length; i++) {
          const op = ops[i]!;
          this._at = i;
          if (i > this._aheadUntil && this._aheadUntil >= 0) this._dropAhead();
          try {
            results.push(await this._one(replicaId, op, pol));
          } catch (err) {
            // It may have changed the tree part-way (a directory's contents displaced, then a failure): what was
            // checked no longer holds for the batch's next operations.
            this._checkedDirs.clear();
            const e = this._fsError(err, `apply ${op.path}`, 'push again');
            results.push(_result(op, OpStatus.REJECTED, this._version(op.path), { error: { code: e.code, message: e.message } }));
          }
        }
      } finally {
        this._unprepare();
        this._afterBatch();
      }
      this._checkedDirs.clear();
      // Nothing is acknowledged before its journal records are on disk (on a memory-backed tree an fsync does nothing).
      this._treeSyncs ??= fsyncCostsIo(this.root);
      if (this._treeSyncs) await Promise.all([...this._dirsToSync].map(fsyncDir));
      this._dirsToSync.clear();
      try {
        await this.state.flush();
      } catch (err) {
        // Unacknowledged: the client keeps the operations logged and resends
        // them; the journal writes its records again once there is room.
        throw this._fsError(err, 'journal the changes', 'push again (the changes stay logged)');
      }
      return results;
    });
  }

  // Gives the verified staged blobs that a batch's stores will rename into
  // the tree their mode and time, and fsyncs them, before the batch is
  // applied: on a disk, fsyncs in flight together cost a fraction of one
  // after another. The operations are checked as usual afterwards; a blob
  // made ready for one that is refused stays staged. Anything that fails
  // here is done again, and reported, when the operation is applied.
  private async _prepare(ops: Operation[]): Promise<void> {
    if (ops.length < 2 || this._verified.size === 0 || !this._sameFileSystem()) return;
    const jobs: { hex: string; mode: number; time: number }[] = [];
    const seen = new Set<string>();
    this._syncCostsIo ??= fsyncCostsIo(this.stagingDir);
    for (const op of ops) {
      if (op.kind !== OpKind.STORE || op.state?.hash?.length !== 32) continue;
      const hex = toHex(op.state.hash);
      if (seen.has(hex) || !this._verified.has(hex)) continue;
      seen.add(hex); // a later store of the same content copies it from the tree
      const mode = op.state.mode & 0o777;
      const time = utimeSeconds(op.state.mtimeMs);
      if (!this._syncCostsIo && _matches(this._hinted.get(hex), mode, time)) continue; // ready as staged
      jobs.push({ hex, mode, time });
    }
    const viaPool = this._syncCostsIo && jobs.length > 1;
    await inParallel(jobs, viaPool ? 32 : 1, async (j) => {
      const blob = inDir(this.stagingDir, j.hex);
      let fd: number;
      try {
        fd = _openStaged(blob);
      } catch {
        return; // applying meets it again and says what failed
      }
      const ready: _Ready = { mode: j.mode, time: j.time };
      this._prepared.set(j.hex, ready); // given back its staging mode after the batch if no store used it
      this._hinted.delete(j.hex);
      try {
        fchmodSync(fd, j.mode);
        futimesSync(fd, j.time, j.time);
        try {
          if (viaPool) await fsyncFd(fd);
          else if (this._syncCostsIo) fsyncSync(fd); // (on tmpfs it would do nothing, 10,000 times over)
        } catch (err) {
          // Its pages may be gone, and a later fsync would not say so: never renamed in, its store fails with
          // this error, and the content is uploaded again.
          this._unstaged(j.hex);
          _unlinkQuiet(blob);
          this._prepared.set(j.hex, { ...ready, error: err });
          return;
        }
        ready.st = fstatSync(fd);
      } catch {
        // (a time out of range...): applying tries again and says what failed
      } finally {
        closeSync(fd);
      }
    });
  }

  // After a batch: the staged blobs _prepare changed that no store renamed in
  // get their staging mode and time back (the mode could keep this server
  // from opening them again; the time is what the sweep of old uploads reads).
  private _unprepare(): void {
    const now = Date.now() / 1000;
    for (const [hex, p] of this._prepared) {
      if (p.error) continue;
      const blob = inDir(this.stagingDir, hex);
      this._hinted.delete(hex);
      _stagingMode(blob);
      try {
        utimesSync(blob, now, now);
      } catch {
        // gone, or not ours: applying copes (_openStaged)
      }
    }
    this._prepared.clear();
  }

  // After a batch: the temps written ahead that no store renamed in are
  // removed, and the held contents the batch wrote into the tree let go
  // (a later store of one copies it from the tree, as for a staged blob).
  private _afterBatch(): void {
    this._dropAhead();
    for (const hex of this._heldUsed) this._unhold(hex);
    this._heldUsed.clear();
    this._batch = [];
    this._stageOld();
  }

  // Removes the temps and directories written ahead that no operation renamed in: once the batch is past their
  // window, as a later operation may remove or move their directory.
  private _dropAhead(): void {
    for (const a of this._ahead.values()) {
      try {
        _unlinkQuiet(join(this._phys(a.dir), a.name));
      } catch {
        // not ours to remove: the next start's scan of the tree removes temps
      }
    }
    this._ahead.clear();
    // Outermost first (a directory made ahead inside another goes with it).
    for (const d of [...this._aheadDirs.keys()].sort()) if (this._aheadDirs.has(d)) this._dropDir(d);
    this._tried.clear();
    this._aheadUntil = -1;
  }

  // Writes held contents (see _hold) for this store and the stores after it
  // in the batch, each into a temp file in its directory with its mode and
  // time, and makes them all durable at once: on a disk, one wave of fsyncs
  // (or one syncfs) for thousands of files costs a fraction of one per
  // directory, which a push of new directories would otherwise pay.
  // The window holds only stores and directory creations (nothing that can
  // remove or move a directory), each store into a directory that is a real
  // one in the tree now or is created by a MAKEDIR before it in the window.
  // Such a directory is made now under a temp name in its parent (see
  // _phys), filled, and renamed into place by its MAKEDIR (_placeDir). What
  // no operation renames in is removed once the batch is past the window; a
  // temp that fails to be written is not kept, and its store writes it again
  // and says what failed.
  private async _writeAhead(op: Operation, hex: string, mode: number, time: number, bytes: Uint8Array): Promise<void> {
    const run: { path: string; hex: string; mode: number; time: number; bytes: Uint8Array }[] = [{ path: op.path, hex, mode, time, bytes }];
    const taken = new Set([op.path]);
    this._aheadUntil = Math.max(this._aheadUntil, this._at);
    const planned: string[] = [];
    // (Not when _one gave this store another path: the batch's next operations are not the ones after it.)
    if (this._batch[this._at]?.path === op.path) {
      // A directory the window may write into: made ahead, or a real one in the tree with only real ones above it
      // (an lstat of a path follows a link above it). This store's own parent _ensureParents has just checked.
      const real = new Map<string, boolean>([['', true], [parentOf(op.path), true]]);
      const isReal = (dir: string): boolean => {
        let r = real.get(dir);
        if (r === undefined) {
          r = this._aheadDirs.has(dir) || (isReal(parentOf(dir)) && _lstatQuiet(inDir(this.root, dir))?.isDirectory() === true);
          real.set(dir, r);
        }
        return r;
      };
      let size = bytes.length;
      for (let j = this._at + 1; j < this._batch.length && run.length < AHEAD_MAX && size < AHEAD_BYTES; j++) {
        const o = this._batch[j]!;
        if (taken.has(o.path) || pathProblem(o.path) || _numbersProblem(o)) break;
        if (o.kind === OpKind.MAKEDIR) {
          if (!isReal(parentOf(o.path))) break;
          const st = _lstatQuiet(inDir(this.root, o.path));
          if (st === null) break;
          if (st?.isDirectory()) real.set(o.path, true);
          else if (st !== undefined) break;
          else if (!this._aheadDirs.has(o.path)) {
            // (Not one its stores could not write into once it has its mode: their temps would stay.)
            if ((o.state.mode & 0o300) !== 0o300 || !this._makeTempDir(o.path)) break;
            planned.push(o.path);
            real.set(o.path, true);
          }
          taken.add(o.path);
          this._aheadUntil = Math.max(this._aheadUntil, j);
          continue;
        }
        if (o.kind !== OpKind.STORE || o.state?.hash?.length !== 32 || !isReal(parentOf(o.path))) break;
        const h = toHex(o.state.hash);
        const b = this._held.get(h);
        if (b === undefined) break;
        taken.add(o.path);
        this._aheadUntil = Math.max(this._aheadUntil, j);
        // Written by an earlier window, or tried and failed there (its store writes it again and says what failed).
        if (this._ahead.has(o.path) || this._tried.has(o.path)) continue;
        run.push({ path: o.path, hex: h, mode: o.state.mode & 0o777, time: utimeSeconds(o.state.mtimeMs), bytes: b.bytes });
        size += b.bytes.length;
      }
    }
    const t0 = performance.now();
    const made = (r: (typeof run)[number], name: string, st: Stats) => this._ahead.set(r.path, { dir: parentOf(r.path), name, hex: r.hex, mode: r.mode, time: r.time, st });
    // Durable together: one syncfs where it stands for an fsync of each file and is worth it (each file is closed once
    // written: a window holds no descriptors), else the fsyncs of 32 files in flight at once.
    this._rootDev ??= statSync(this.root).dev;
    const rootDev = this._rootDev;
    // Writes r's temp with its mode and time, fsynced when asked (or when on another file system mounted in the
    // tree, which a syncfs of the tree's does not cover), and closes it; undefined when that failed (a full disk, a
    // time out of range), the temp then removed: its store tries again and says what failed.
    const writeOne = async (r: (typeof run)[number], fsyncIt: boolean): Promise<{ name: string; st: Stats } | undefined> => {
      this._tried.add(r.path);
      const name = basename(tempNameFor(r.path));
      const tmp = join(this._phys(parentOf(r.path)), name);
      let fd: number;
      try {
        fd = _writeNew(tmp, r.bytes);
      } catch {
        return undefined;
      }
      try {
        fchmodSync(fd, r.mode);
        futimesSync(fd, r.time, r.time);
        const st = fstatSync(fd);
        if (fsyncIt || st.dev !== rootDev) await fsyncFd(fd);
        return { name, st };
      } catch {
        _unlinkQuiet(tmp);
        return undefined;
      } finally {
        closeSync(fd);
      }
    };
    let viaSyncfs = run.length >= this._syncfsFrom && syncFsUsable(this.root);
    if (viaSyncfs) {
      const written: { r: (typeof run)[number]; name: string; st: Stats }[] = [];
      for (const r of run) {
        const w = await writeOne(r, false);
        if (w) written.push({ r, ...w });
      }
      if (await syncFs(this.root)) {
        for (const w of written) made(w.r, w.name, w.st);
      } else {
        viaSyncfs = false;
        await inParallel(written, 32, async (w) => {
          const tmp = join(this._phys(parentOf(w.r.path)), w.name);
          let fd: number | undefined;
          try {
            fd = openSync(tmp, 'r');
            await fsyncFd(fd);
            made(w.r, w.name, w.st);
          } catch {
            _unlinkQuiet(tmp);
          } finally {
            if (fd !== undefined) closeSync(fd);
          }
        });
      }
    } else {
      await inParallel(run, 32, async (r) => {
        const w = await writeOne(r, true);
        if (w) made(r, w.name, w.st);
      });
    }
    this._onWriteAhead?.({ files: run.filter((r) => this._ahead.has(r.path)).length, dirs: planned.length, syncfs: viaSyncfs, ms: performance.now() - t0 });
  }

  // Where directory dir is now: in the tree, or, made ahead and not yet renamed into place, under its temp name.
  private _phys(dir: string): string {
    const t = this._aheadDirs.get(dir);
    return t === undefined ? inDir(this.root, dir) : join(this._phys(parentOf(dir)), t);
  }

  // Makes the directory a MAKEDIR later in the window creates, under a temp name in its parent (see _writeAhead).
  private _makeTempDir(path: string): boolean {
    const name = basename(tempNameFor(path));
    try {
      mkdirSync(join(this._phys(parentOf(path)), name), 0o700);
    } catch {
      return false;
    }
    this._aheadDirs.set(path, name);
    return true;
  }

  // A MAKEDIR of a directory made ahead (see _writeAhead): renames it into place, with the temps written into it.
  private _placeDir(path: string, abs: string): boolean {
    if (!this._aheadDirs.has(path)) return false;
    try {
      renameSync(this._phys(path), abs);
    } catch {
      this._dropDir(path);
      return false;
    }
    this._aheadDirs.delete(path);
    return true;
  }

  // Removes a directory made ahead and everything written ahead into it (its MAKEDIR did not place it).
  private _dropDir(path: string): void {
    const prefix = `${path}/`;
    try {
      rmSync(this._phys(path), { recursive: true, force: true });
    } catch {
      // not ours to remove: the next start's scan of the tree removes temps
    }
    for (const p of [...this._ahead.keys()]) if (p.startsWith(prefix)) this._ahead.delete(p);
    for (const d of [...this._aheadDirs.keys()]) if (d === path || d.startsWith(prefix)) this._aheadDirs.delete(d);
  }

  // A file-system error as one line for the client: what failed, where in
  // the served tree (or the server's state), and what to do.
  private _fsError(err: unknown, action: string, then: string): ImzError {
    if (err instanceof ImzError) return err;
    const e = err as NodeJS.ErrnoException & { dest?: string };
    // Server paths are told relative to the served tree or the state dir.
    const at = fsErrorPlace(e, '').replace(`${this.state.dir}/`, 'server state ').replace(`${this.root}/`, '').replace(this.root, 'the served tree');
    if (e.code === 'ENOSPC' || e.code === 'EDQUOT') {
      return new ImzError(Codes.NO_SPACE, `cannot ${action}: no space left on the server's disk${e.code === 'EDQUOT' ? ' (quota exceeded)' : ''}; free space on the server, then ${then}`);
    }
    if (e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS') {
      const why = e.code === 'EROFS' ? 'read-only file system' : 'permission denied';
      return new ImzError(Codes.IO, `cannot ${action}: the server may not write there (${why}${at ? ` on ${at}` : ''}); fix that on the server, then ${then}`);
    }
    return new ImzError(Codes.IO, `cannot ${action}: ${(err as Error)?.message ?? String(err)}`);
  }

  // Journals a path whose state on disk is not the table's (a direct write
  // not journalled yet). Refuses the operation while the path keeps changing.
  // Whether a store changes the file's mode: its mode against the base version's, which the client sends (an older
  // client does not: then the journal's record of that version says). A create has no base: its mode is its own.
  // Unknown (the record trimmed from the journal): no change, the server's mode staying.
  private async _changesMode(op: Operation): Promise<boolean> {
    const mode = op.state.mode & 0o7777;
    if (op.base === 0) return true;
    if (op.baseMode) return mode !== (op.baseMode & 0o7777);
    const base = await this._baseFile(op);
    return base !== undefined && mode !== (base.mode & 0o7777);
  }

  // The journal's record of the file an operation was based on (undefined: not a file, or trimmed from the journal).
  private async _baseFile(op: Operation): Promise<Entry | undefined> {
    const r = await this.state.journal.record(op.base);
    return r && r.entry.path === op.path && r.entry.type === EntryType.FILE ? r.entry : undefined;
  }

  // (Called when _agrees said no: the check costs an lstat, the call of an async function a turn of the event loop.)
  private async _catchUp(path: string): Promise<void> {
    await this.scanner.scanNow(path);
    if (this.state.table.has(path) && !this._agrees(path)) {
      throw new ImzError(Codes.STALE, `cannot apply ${path}: it is being changed on the server right now (push again)`);
    }
  }

  // True when the path on disk is what the table says (by lstat, as the scanner tells a change).
  // (By lstatFacts: Node 20's lstatSync builds four Dates per call, a tenth of the server's work on a push of new files.)
  private _agrees(path: string): boolean {
    const t = this.state.table.get(path);
    const st = _agreeFacts;
    let there;
    try {
      there = lstatFacts(inDir(this.root, path), st);
    } catch {
      return true; // a parent is not a directory: applying says so
    }
    const kind = there ? _kindOf(st.mode) : undefined;
    this._seen = { path, kind };
    // An untracked directory holds no version of its own: applying handles it (and refuses to replace one that is not empty).
    if (!t && kind?.isDirectory()) return true;
    if (!t || !kind) return !t && !kind;
    if (kind.isDirectory()) return t.type === EntryType.DIR;
    if (kind.isSymbolicLink()) return t.type === EntryType.SYMLINK;
    return kind.isFile() && t.type === EntryType.FILE && t.size === st.size && sameMtime(t.mtimeMs, st.mtimeMs) && (t.ino === 0 || t.ino === st.ino);
  }

  private _version(path: string): number {
    return this.state.table.get(path)?.version ?? 0;
  }

  private async _one(replicaId: string, op: Operation, policy: Policy): Promise<OpResult> {
    this._seen = undefined;
    checkPath(op.path, 'reintegrate');
    if (op.kind === OpKind.MOVE) checkPath(op.fromPath, 'reintegrate');
    const bad = _numbersProblem(op);
    if (bad) throw new ImzError(Codes.PROTOCOL, `cannot reintegrate ${op.path}: ${bad}`);
    if ((this.state.origins.get(replicaId) ?? 0) >= op.seq) return _result(op, OpStatus.DUPLICATE, this._version(op.path));
    // A local program may have just written the path, and the watcher not
    // reported it yet: journal what is really there first, so the operation
    // is checked against it and never replaces a version nobody saw.
    if (!this._agrees(op.path)) await this._catchUp(op.path);
    if (op.kind === OpKind.MOVE && !this._agrees(op.fromPath)) await this._catchUp(op.fromPath);
    const cur = this.state.table.get(op.path);
    const curVersion = cur?.version ?? 0;
    const baseOk = op.base === curVersion && (op.kind !== OpKind.MOVE || (this.state.table.get(op.fromPath)?.version ?? 0) === op.fromBase);
    // A directory that holds entries cannot be replaced by a file or a link as one version: the client replaced the
    // directory it knew, and another replica has added inside it since (a type change meeting additions). A conflict,
    // settled by the policy like any other; applied, it was refused as an error at every push (exit 1, never settled).
    // (The table walk only for an operation that replaces a directory: rare.)
    const overBusyDir = _replacesDir(op) && cur?.type === EntryType.DIR && this._hasChildren(op.path);
    if (!baseOk || overBusyDir) {
      if (_sameResult(cur, op, this.state.table.get(op.fromPath))) return _result(op, OpStatus.SAME, curVersion);
      if (op.kind === OpKind.STORE && cur?.type === EntryType.FILE && cur.hash === Buffer.from(op.state.hash).toString('latin1')) {
        // The content the server got since, with another mode (see _sameResult). Kept from the base version, the
        // mode is the server's newer one: the same. Changed by the client, it is a change of ours meeting theirs,
        // applied as a chmod would be (taken as the same, the client indexed a mode the server lacks, and its next
        // pull took the chmod back).
        if (!(await this._changesMode(op))) return _result(op, OpStatus.SAME, curVersion);
        const version = await this._apply(replicaId, { ...op, kind: OpKind.SETATTR, state: { ...op.state, mtimeMs: cur.mtimeMs } }, false);
        return _result(op, OpStatus.APPLIED, version, { conflictClass: 'meta/update' });
      }
      if (op.kind === OpKind.STORE && cur?.type === EntryType.FILE && op.state.type === EntryType.FILE && _sameContent(await this._baseFile(op), cur)) {
        // Our content change meets only a mode change (or a touch) there since our base: both apply, as at a pull.
        // The mode is the server's, unless the client changed it too (then the later change wins, as two chmods do).
        const mode = (await this._changesMode(op)) ? op.state.mode : cur.mode;
        const version = await this._apply(replicaId, { ...op, state: { ...op.state, mode } }, false);
        return _result(op, OpStatus.APPLIED, version, { conflictClass: 'meta/update' });
      }
      if (op.kind === OpKind.SETATTR && cur && cur.type === op.state.type && cur.type === EntryType.FILE) {
        // A mode change meets a content change made since: both apply, no conflict. What the path holds now is told:
        // the client indexes the version only if the content is its own.
        const version = await this._apply(replicaId, { ...op, state: { ...op.state, mtimeMs: cur.mtimeMs } }, false);
        const now = this.state.table.get(op.path);
        return _result(op, OpStatus.APPLIED, version, { conflictClass: 'meta/update', ...(now ? { server: tableToEntry(op.path, now) } : {}) });
      }
      const cls = _classify(cur, op);
      const server = cur ? tableToEntry(op.path, cur) : null;
      const clientNewer = op.state.type !== EntryType.NONE && cur !== undefined && op.state.mtimeMs > cur.mtimeMs;
      // A directory that still holds entries is displaced whole when a file or link wins its place (what is inside
      // first, as a winning removal does); for any other operation the client's side loses, as under server-wins.
      // (overBusyDir already walked the table for a file or link over a directory.)
      const busyDir = overBusyDir || (!_replacesDir(op) && cur?.type === EntryType.DIR && this._hasChildren(op.path));
      // Whole: only what the table holds under it (something untracked there, ignored, cannot be displaced: nothing
      // was displaced, and the replacement failed at every push). Under newest, ours must be newer than all of it.
      const displaceWhole = overBusyDir && this._onlyTrackedUnder(op.path);
      const newer = displaceWhole ? op.state.mtimeMs > this._newestUnder(op.path, cur!.mtimeMs) : clientNewer;
      if ((!busyDir || displaceWhole) && (policy === 'client-wins' || (policy === 'newest' && newer))) {
        const inside = displaceWhole ? await this._displaceInside(replicaId, op) : 0;
        const displaced = cur ? await this._displace(op.path, cur) : '';
        const version = await this._apply(replicaId, _storeWhereGone(op, cur, this.state.table.get(op.fromPath)), true);
        const whole = `displaced/index.jsonl (directory ${op.path} v${curVersion} and ${inside} entries under it)`;
        return _result(op, OpStatus.APPLIED, version, { conflictClass: cls, displaced: displaceWhole ? whole : displaced, server });
      }
      if (policy === 'keep-both' && _replacesDir(op) && cur) {
        // A free name: a directory keeps its version while entries are added inside, so a second replacement of it
        // got the same name, and the forced store went over the first one kept.
        const alt = freeName(this.root, checkPath(keepName(op.path, replicaId, curVersion), 'keep both versions'), (p) => this.state.table.has(p));
        const version = await this._apply(replicaId, { ...op, path: alt, base: this._version(alt) }, true);
        return _result(op, OpStatus.CONFLICT, curVersion, { conflictClass: cls, keptAs: alt, server, altVersion: version });
      }
      return _result(op, OpStatus.CONFLICT, curVersion, { conflictClass: cls, server });
    }
    if (op.kind === OpKind.REMOVEDIR && this._hasChildren(op.path)) {
      // A directory the client removed, to which the server (or another replica) added entries.
      if (policy !== 'client-wins' || !this._onlyTrackedUnder(op.path)) return _result(op, OpStatus.CONFLICT, curVersion, { conflictClass: 'dir-removed', server: cur ? tableToEntry(op.path, cur) : null });
      // client-wins: the removal goes through; everything it takes away is displaced first.
      const inside = await this._displaceInside(replicaId, op);
      const version = await this._apply(replicaId, op, true);
      return _result(op, OpStatus.APPLIED, version, { conflictClass: 'dir-removed', displaced: `displaced/index.jsonl (${inside} entries under ${op.path})` });
    }
    // A store that leaves the mode as the client knew it keeps the server's: after a push that merged its content over
    // a chmod made elsewhere, the client indexed its own mode, and sending that again undid the chmod.
    if (op.kind === OpKind.STORE && cur?.type === EntryType.FILE && op.baseMode && ((op.state.mode ^ op.baseMode) & 0o7777) === 0) {
      op = { ...op, state: { ...op.state, mode: cur.mode } };
    }
    const version = await this._apply(replicaId, op, false);
    // What was read back from the disk and journalled for a mkdir, chmod or move can differ from what the client
    // has (a mode the file system refused, a set-id bit inherited): told, so the client claims the records only
    // when they say what it has (its cursor then passes over them, and a pull need not read them back).
    if (op.kind === OpKind.MAKEDIR || op.kind === OpKind.SETATTR || op.kind === OpKind.MOVE) {
      const now = this.state.table.get(op.path);
      if (now) return _result(op, OpStatus.APPLIED, version, { server: tableToEntry(op.path, now) });
    }
    return _result(op, OpStatus.APPLIED, version);
  }

  // Displaces and removes everything under op.path (deepest first), journalled as this operation's: a removal or
  // replacement of a directory that won. Returns how many entries went.
  private async _displaceInside(replicaId: string, op: Operation): Promise<number> {
    const prefix = `${op.path}/`;
    const inside = [...this.state.table.keys()].filter((p) => p.startsWith(prefix)).sort((a, b) => (a < b ? 1 : -1));
    const removals: PendingChange[] = [];
    for (const p of inside) {
      const t = this.state.table.get(p)!;
      await this._displace(p, t);
      const abs = inDir(this.root, p);
      if (t.type === EntryType.DIR) {
        rmdirSync(abs);
        this.scanner.forgetRemoved(p);
      } else unlinkSync(abs);
      removals.push({ change: t.type === EntryType.DIR ? Change.RMDIR : Change.REMOVE, path: p, state: undefined, origin: replicaId, originSeq: op.seq });
    }
    this._dirsToSync.add(inDir(this.root, op.path));
    await this.state.commit(removals, { durable: false });
    return inside.length;
  }

  // The latest mtime in the table at or under path (from: the directory's own).
  private _newestUnder(path: string, from: number): number {
    const prefix = `${path}/`;
    let newest = from;
    for (const [p, t] of this.state.table) if (p.startsWith(prefix) && t.mtimeMs > newest) newest = t.mtimeMs;
    return newest;
  }

  // True when everything on disk under path is in the table (nothing ignored or not scanned yet lies there).
  private _onlyTrackedUnder(path: string): boolean {
    const walk = (rel: string): boolean => {
      let list: Dirent[];
      try {
        list = readdirSync(inDir(this.root, rel), { withFileTypes: true });
      } catch {
        return false;
      }
      for (const d of list) {
        const p = `${rel}/${d.name}`;
        if (!this.state.table.has(p)) return false;
        if (d.isDirectory() && !walk(p)) return false;
      }
      return true;
    };
    return walk(path);
  }

  // True when the table holds anything under path.
  private _hasChildren(path: string): boolean {
    return this.state.table.holdsUnder(path);
  }

  // Keeps the server's version of a path that a client's change replaces:
  // a file's content is copied; a symlink's target and an empty directory
  // are recorded in the index of displaced versions.
  private async _displace(path: string, cur: TableEntry): Promise<string> {
    await mkdir(this.displacedDir, { recursive: true });
    const name = `${cur.version}-${basename(path).slice(0, 100)}`;
    if (cur.type === EntryType.FILE) copyFileSync(inDir(this.root, path), join(this.displacedDir, name));
    const kind = cur.type === EntryType.FILE ? 'file' : cur.type === EntryType.SYMLINK ? 'symlink' : 'dir';
    await open(join(this.displacedDir, 'index.jsonl'), 'a').then(async (fh) => {
      await fh.write(JSON.stringify({
        path, kind, version: cur.version, hash: cur.hash ? toHex(new Uint8Array(Buffer.from(cur.hash, 'latin1'))) : undefined, size: cur.size, mode: cur.mode,
        mtimeMs: cur.mtimeMs, target: cur.target || undefined, savedAs: cur.type === EntryType.FILE ? name : undefined, time: new Date().toISOString(),
      }) + '\n');
      await fh.datasync();
      await fh.close();
    });
    return cur.type === EntryType.FILE ? `displaced/${name}` : `displaced/index.jsonl (${kind} ${path} v${cur.version})`;
  }

  // Applies one operation to the tree, journals it, returns the new version.
  private async _apply(replicaId: string, op: Operation, forced: boolean): Promise<number> {
    const abs = inDir(this.root, op.path);
    const changes: PendingChange[] = [];
    const origin = { origin: replicaId, originSeq: op.seq };
    // Directories may go away or change type: forget what was checked.
    if (forced) this._checkedDirs.clear();
    // (An unlink, a removal or a move changes nothing above its paths: every parent checked stays checked, which
    // spares a few lstats an operation to a push of thousands.)
    else if (op.kind === OpKind.REMOVEDIR || op.kind === OpKind.UNLINK) this._forgetChecked(op.path);
    else if (op.kind === OpKind.MOVE) {
      this._forgetChecked(op.fromPath);
      this._forgetChecked(op.path);
    }
    this._ensureParents(op.path, changes, origin);
    const cur = this.state.table.get(op.path);
    // What _catchUp just saw of this path (only reads happened since; a forced win may have displaced things).
    const seen = this._seen;
    this._seen = undefined;
    const onDisk: _Kind | undefined = !forced && seen?.path === op.path ? seen.kind : lstatSync(abs, { throwIfNoEntry: false });
    // A directory about to be replaced (by a file or a link): what was checked under it no longer holds.
    if (onDisk?.isDirectory() && (op.kind === OpKind.STORE || op.kind === OpKind.LINK)) this._checkedDirs.clear();
    // Something of another type in the way (a forced win, or a retype): clear it first.
    const clear = () => {
      if (!onDisk) return;
      if (onDisk.isDirectory()) {
        if (readdirSyncSafe(abs).length > 0) throw new ImzError(Codes.CONFLICT, `cannot replace directory ${op.path}: it is not empty`);
        rmdirSync(abs);
        this.scanner.forgetRemoved(op.path);
      } else unlinkSync(abs);
    };
    switch (op.kind) {
      case OpKind.STORE: {
        const hex = toHex(op.state.hash);
        const failed = this._prepared.get(hex)?.error;
        if (failed) {
          this._prepared.delete(hex);
          throw failed;
        }
        const blob = inDir(this.stagingDir, hex);
        const mode = op.state.mode & 0o777;
        const time = utimeSeconds(op.state.mtimeMs);
        const kind = cur ? (cur.type === EntryType.FILE ? Change.MODIFY : Change.RETYPE) : Change.CREATE;
        // Content held in memory: written ahead in its directory (with the window after it), renamed into place.
        const held = this._held.get(hex)?.bytes;
        if (held !== undefined && !onDisk?.isDirectory()) {
          let ahead = this._ahead.get(op.path);
          if (ahead !== undefined && (ahead.hex !== hex || ahead.mode !== mode || ahead.time !== time)) {
            // Written for the operation as sent; _one changed it (a mode kept from the server's).
            this._ahead.delete(op.path);
            _unlinkQuiet(join(this._phys(ahead.dir), ahead.name));
            ahead = undefined;
          }
          if (ahead === undefined && !this._tried.has(op.path)) {
            await this._writeAhead(op, hex, mode, time, held);
            ahead = this._ahead.get(op.path);
          }
          if (ahead !== undefined) {
            this._ahead.delete(op.path);
            let moved = true;
            const tmp = join(this._phys(ahead.dir), ahead.name);
            try {
              renameSync(tmp, abs);
            } catch {
              // (refused): the copy below tries again, and says what fails
              _unlinkQuiet(tmp);
              moved = false;
            }
            if (moved) {
              this._heldUsed.add(hex);
              // (Also staged, by a PUT_BLOB whose bytes came in pieces: not needed any more.)
              if (this._staging().staged.has(hex)) {
                _unlinkQuiet(blob);
                this._unstaged(hex);
              }
              this.scanner.expectWrite(op.path);
              changes.push(this._change(op.path, kind, origin, op.state.hash, ahead.st));
              break;
            }
          }
        }
        // A blob this process staged and checked is finished where it lies
        // and renamed into place: no copy, no second read. A later operation
        // with the same content copies it from the tree.
        // (Not over a directory: that path clears it first, which the copy below does in its own order.)
        if (this._verified.has(hex) && !onDisk?.isDirectory() && this._sameFileSystem()) {
          // What the path holds once renamed (a rename keeps all of it but the ctime).
          let st: Stats | undefined;
          this._syncCostsIo ??= fsyncCostsIo(this.stagingDir);
          const ready = this._prepared.get(hex) ?? (this._syncCostsIo ? undefined : this._hinted.get(hex));
          if (_matches(ready, mode, time)) st = ready!.st;
          else {
            let fd: number | undefined;
            try {
              fd = _openStaged(blob);
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
              this._verified.delete(hex);
            }
            if (fd !== undefined) st = _finishFile(fd, mode, time);
          }
          this._prepared.delete(hex);
          if (st !== undefined) {
            let moved = true;
            try {
              renameSync(blob, abs);
            } catch {
              // Refused (a directory we may not write, another file system): the copy below
              // tries the same through a temp file beside the target, and names the right place if it fails too.
              moved = false;
            }
            if (moved) {
              this._unstaged(hex);
              this.scanner.expectWrite(op.path); // one event for the watcher
              changes.push(this._change(op.path, kind, origin, op.state.hash, st));
              break;
            }
          }
        }
        const tmp = tempNameFor(abs);
        let staged = true;
        try {
          if (held !== undefined) closeSync(_writeNew(tmp, held));
          else {
            this._hinted.delete(hex);
            _stagingMode(blob); // a batch that a crash cut short can have left it another mode
            copyFileSync(blob, tmp, fsc.COPYFILE_FICLONE);
          }
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          staged = false;
        }
        if (staged && held === undefined && !_hashIs(tmp, op.state.hash)) {
          // A staged blob torn by a crash: drop it, and fall back on the tree or a new upload.
          _unlinkQuiet(tmp);
          _unlinkQuiet(blob);
          staged = false;
        }
        if (!staged && !this._copyFromTree(op.state.hash, tmp)) throw new ImzError(Codes.NOT_FOUND, `cannot store ${op.path}: its content was not uploaded (push again)`);
        let st: Stats;
        try {
          st = _finishFile(openSync(tmp, 'r+'), mode, time);
          if (onDisk?.isDirectory()) clear();
          renameSync(tmp, abs);
          if (!onDisk?.isDirectory()) this.scanner.expectWrite(op.path);
        } catch (err) {
          // Refused (a directory in the way that is not empty, a time out of range): no copy is left in the tree.
          _unlinkQuiet(tmp);
          throw err;
        }
        // The content now lives in the tree (where later uploads of it are
        // found): the staged copy is not needed any more.
        if (held !== undefined) this._heldUsed.add(hex);
        _unlinkQuiet(blob);
        this._unstaged(hex);
        changes.push(this._change(op.path, kind, origin, op.state.hash, st));
        break;
      }
      case OpKind.MAKEDIR:
        if (onDisk && !onDisk.isDirectory()) clear();
        if (!onDisk || !onDisk.isDirectory()) {
          if (onDisk || !this._placeDir(op.path, abs)) mkdirSync(abs, op.state.mode & 0o777);
          // The umask narrows what mkdir gives (a client's 0777 became 0755, and the next pull took that back to it).
          _giveAttrs(abs, op.state.mode, undefined);
        }
        if (!onDisk) this.scanner.expectWrite(op.path);
        changes.push(this._change(op.path, cur ? Change.RETYPE : Change.MKDIR, origin));
        this.scanner.watchCreated(op.path);
        break;
      case OpKind.LINK: {
        const tmp = tempNameFor(abs);
        symlinkSync(op.state.target, tmp);
        try {
          if (onDisk?.isDirectory()) clear();
          renameSync(tmp, abs);
          if (!onDisk?.isDirectory()) this.scanner.expectWrite(op.path);
        } catch (err) {
          rmSync(tmp, { force: true });
          throw err;
        }
        changes.push(this._change(op.path, cur && cur.type !== EntryType.SYMLINK ? Change.RETYPE : Change.SYMLINK, origin));
        break;
      }
      case OpKind.UNLINK:
        if (onDisk) {
          clear();
          // One event for the watcher. (Unannounced, each removal had the scanner lstat the path again between
          // batches: a push of 10,000 removals waited a second for it.)
          this.scanner.expectWrite(op.path);
        }
        changes.push({ change: Change.REMOVE, path: op.path, state: undefined, ...origin });
        break;
      case OpKind.REMOVEDIR:
        if (onDisk) {
          if (!onDisk.isDirectory()) unlinkSync(abs);
          else {
            rmdirSync(abs);
            this.scanner.forgetRemoved(op.path);
          }
          this.scanner.expectWrite(op.path);
        }
        changes.push({ change: Change.RMDIR, path: op.path, state: undefined, ...origin });
        break;
      case OpKind.SETATTR:
        if (!onDisk) throw new ImzError(Codes.NOT_FOUND, `cannot change ${op.path}: it does not exist on the server`);
        // chmod follows a symlink (there is no lchmod): it would change what the link points at, maybe outside the tree.
        if (onDisk.isSymbolicLink()) throw new ImzError(Codes.PROTOCOL, `cannot change ${op.path}: it is a symlink, whose mode is not replicated`);
        // Times first: if they are refused, nothing has changed yet. (Synchronous: awaited, each call was a turn of
        // the thread pool, and a push of 10,000 chmods waited on them. Not announced to the watcher: an attribute
        // event can merge with a local chmod or touch made right after, which would be dropped with it.)
        // A time already the one sent is not set again: a write since the check then shows in it, and the file is
        // read again (set anew, it would hide that write, and the table's hash be journalled for other content).
        const touch = onDisk.isFile() && _retimed(abs, lstatSync(abs).mtimeMs, op.state.mtimeMs);
        chmodSync(abs, op.state.mode & 0o777);
        changes.push(this._change(op.path, Change.META, origin, undefined, undefined, touch ? undefined : cur));
        break;
      case OpKind.MOVE: {
        const from = inDir(this.root, op.fromPath);
        // The source's parents must be real directories: through a symlink, the source could lie outside the tree.
        const source = this._underCheckedDirs(op.fromPath) ? lstatSync(from, { throwIfNoEntry: false }) : undefined;
        if (!source) throw new ImzError(Codes.NOT_FOUND, `cannot move ${op.fromPath}: it does not exist on the server`);
        if (op.fromPath === op.path) throw new ImzError(Codes.PROTOCOL, `cannot move ${op.path}: onto itself`);
        const cleared = onDisk !== undefined && forced;
        if (cleared) clear();
        // (A rename onto another name of the same file does nothing, and makes no event.)
        const silent = lstatSync(abs, { throwIfNoEntry: false })?.ino === source.ino;
        renameSync(from, abs);
        // That rename left both names: the source goes as the REMOVE journalled below says.
        if (silent) unlinkSync(from);
        // The client moved the file and may have changed its mode or time since (one operation for both): what it
        // sent is given to it here, not the old ones kept (a pull took the client's chmod or touch back).
        const attrs = _giveAttrs(abs, op.state.mode, op.state.mtimeMs);
        const given = attrs.file;
        // Its events: the unlink's where it was, when the rename left both names; else one where it was and one where
        // it is (each with a cookie of its own, never merged with another). New attributes are not announced: their
        // event can merge with a local chmod or touch right after, which would then be dropped with it (found by
        // review); scanned, it costs an lstat.
        if (silent) this.scanner.expectWrite(op.fromPath);
        else if (!cleared && given) {
          this.scanner.expectWrite(op.fromPath);
          this.scanner.expectWrite(op.path);
        }
        const moved = this.state.table.get(op.fromPath);
        changes.push({ change: Change.REMOVE, path: op.fromPath, state: undefined, ...origin });
        // (Its time set anew, a write since the check would leave no trace: read again then.)
        changes.push(this._change(op.path, Change.CREATE, origin, undefined, undefined, attrs.touched ? undefined : moved));
        break;
      }
      default:
        throw new ImzError(Codes.PROTOCOL, `cannot reintegrate: unknown operation kind ${op.kind}`);
    }
    this._dirsToSync.add(dirname(abs));
    if (op.kind === OpKind.MOVE) this._dirsToSync.add(dirname(inDir(this.root, op.fromPath)));
    // Durable once per batch: reintegrate() flushes before answering.
    const records = this.state.commitNow(changes) ?? (await this.state.commit(changes, { durable: false }));
    return records[records.length - 1]!.seq;
  }

  // The table state of a path as it is on disk now (after imz wrote it).
  // was: the table's entry of the file it is, moved or given a new mode
  // (checked against the tree before the operation, its time not set since):
  // still that inode with that size and time, it holds that content, not
  // read again (a chmod -R or a move of big files made the server read them
  // all).
  private _change(path: string, change: PendingChange['change'], origin: { origin: string; originSeq: number }, knownHash?: Uint8Array, known?: Stats, was?: TableEntry): PendingChange {
    const abs = inDir(this.root, path);
    const st = known ?? lstatSync(abs);
    const fe = fsEntryFromStats(path, st, st.isSymbolicLink() ? readlinkSync(abs) : '');
    if (typeof fe === 'string') throw new ImzError(Codes.IO, `cannot journal ${path}: it is a ${fe}`);
    let hash = '';
    if (fe.type === EntryType.FILE && knownHash) hash = Buffer.from(knownHash).toString('latin1'); // verified when staged
    else if (fe.type === EntryType.FILE && was?.type === EntryType.FILE && was.hash && was.ino !== 0 && was.ino === fe.ino && was.size === fe.size && sameMtime(was.mtimeMs, fe.mtimeMs)) hash = was.hash;
    else if (fe.type === EntryType.FILE) {
      hash = Buffer.from(hashFileSync(abs)).toString('latin1');
    }
    return { change, path, state: { type: fe.type, size: fe.size, mode: fe.mode, mtimeMs: fe.mtimeMs, hash, target: fe.target, ino: fe.ino }, ...origin };
  }

  // True when every parent of path is a real directory (not a symlink or a file); those checked are remembered.
  private _underCheckedDirs(path: string): boolean {
    const parent = parentOf(path);
    if (parent === '' || this._checkedDirs.has(parent)) return true; // (what is checked, its parents were too)
    if (!_underRealDirs(this.root, path)) return false;
    for (let p = parent; p !== '' && !this._checkedDirs.has(p); p = parentOf(p)) this._checkedDirs.add(p);
    return true;
  }

  // Forgets that path and the directories under it were checked.
  private _forgetChecked(path: string): void {
    if (!this._checkedDirs.delete(path)) return; // (what is under a directory was checked only after it was)
    const prefix = `${path}/`;
    for (const d of this._checkedDirs) if (d.startsWith(prefix)) this._checkedDirs.delete(d);
  }

  // Creates missing parent directories of path (journalled), refusing to go through anything but real directories.
  private _ensureParents(path: string, changes: PendingChange[], origin: { origin: string; originSeq: number }): void {
    const parts = path.split('/');
    let cur = '';
    for (let i = 0; i < parts.length - 1; i++) {
      cur = cur === '' ? parts[i]! : `${cur}/${parts[i]}`;
      if (this._checkedDirs.has(cur)) continue;
      const st = lstatSync(inDir(this.root, cur), { throwIfNoEntry: false });
      if (!st) {
        mkdirSync(inDir(this.root, cur), 0o755);
        // Its entry in its parent is durable before the journal says it is there (as an operation's own path is).
        this._dirsToSync.add(dirname(inDir(this.root, cur)));
        this.scanner.expectWrite(cur);
        changes.push(this._change(cur, Change.MKDIR, origin));
        this.scanner.watchCreated(cur);
      } else if (!st.isDirectory()) {
        throw new ImzError(Codes.CONFLICT, `cannot write ${path}: ${cur} on the server is not a directory`);
      }
      this._checkedDirs.add(cur);
    }
  }
}

// An lstat that answers undefined where nothing is, and null where it cannot tell (no search permission, a file
// where a directory was, a name too long): the caller stops there.
function _lstatQuiet(path: string): Stats | undefined | null {
  try {
    return lstatSync(path, { throwIfNoEntry: false });
  } catch {
    return null;
  }
}

// Writes all of data: a write to a nearly full disk can be short.
function _writeAllSync(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) {
    const n = writeSync(fd, data, off, data.length - off);
    if (n === 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    off += n;
  }
}

// Numbers an imz client always sends well formed. A NaN or huge seq would
// spoil retry detection for the replica (every later seq compared as a
// duplicate, or none); a time utimes refuses would fail half-way through.
function _numbersProblem(op: Operation): string | undefined {
  if (!Number.isSafeInteger(op.seq) || op.seq < 1) return `operation seq ${op.seq} is not a positive integer`;
  if (!Number.isSafeInteger(op.base) || op.base < 0 || !Number.isSafeInteger(op.fromBase) || op.fromBase < 0) return 'its base version is not a version';
  if (!Number.isFinite(op.state.mtimeMs) || Math.abs(op.state.mtimeMs) > 8.64e15) return `modification time ${op.state.mtimeMs} is out of range`;
  return undefined;
}

// True when every parent of path (relative to root) is a real directory, not a symlink or a file.
function _underRealDirs(root: string, path: string): boolean {
  const parts = path.split('/');
  let cur = root;
  for (let i = 0; i < parts.length - 1; i++) {
    cur = inDir(cur, parts[i]!);
    if (!lstatSync(cur, { throwIfNoEntry: false })?.isDirectory()) return false;
  }
  return true;
}

function readdirSyncSafe(abs: string): string[] {
  try {
    return readdirSync(abs);
  } catch {
    return [];
  }
}

// A temp file in a store's directory, holding its content with its mode and time, durable (see _writeAhead).
interface _Ahead {
  /** The directory it goes into, and its temp name there (see _phys: the directory may be made ahead too). */
  dir: string;
  name: string;
  hex: string;
  mode: number;
  time: number;
  st: Stats;
}

/** A staged blob made ready by _prepare for the mode and time of a store: its stat then, or why it failed. */
interface _Ready {
  mode: number;
  time: number;
  st?: Stats;
  error?: unknown;
}

// True when a staged blob is ready for a store of this mode and time (its stat taken once it had them).
function _matches(r: _Ready | undefined, mode: number, time: number): boolean {
  return r?.st !== undefined && r.mode === mode && r.time === time;
}

// PUT_BLOBS's hint as the mode and time a store gives (undefined for none, or one unfit for staging: the blob must
// stay readable and writable by this server, and by no other user: a blob checked against its hash and left
// writable by others, maybe for long, could be changed before it is renamed in, and journalled with that hash;
// and the time one utimes takes).
function _hintOf(b: BlobPiece): _Ready | undefined {
  const mode = (b.mode ?? 0) & 0o777;
  const ms = b.mtimeMs ?? 0;
  if ((mode & 0o600) !== 0o600 || (mode & 0o022) !== 0 || !Number.isFinite(ms) || Math.abs(ms) > 8.64e15) return undefined;
  return { mode, time: utimeSeconds(ms) };
}

/** What _apply asks of the thing at a path: its type (a Stats, or _kindOf a mode). */
interface _Kind {
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
  isFile(): boolean;
}

const _KINDS = new Map<number, _Kind>();

// The type of an lstat's mode, as Stats tells it (one shared object per type).
function _kindOf(mode: number): _Kind {
  const fmt = mode & 0o170000;
  let k = _KINDS.get(fmt);
  if (!k) {
    k = { isDirectory: () => fmt === 0o040000, isSymbolicLink: () => fmt === 0o120000, isFile: () => fmt === 0o100000 };
    _KINDS.set(fmt, k);
  }
  return k;
}

const _agreeFacts: StatFacts = { mode: 0, ino: 0, size: 0, mtimeMs: 0, ctimeMs: 0 };

// Gives a staged blob, still open, the hint's mode and time; returns them with its stat, or undefined when the file
// system keeps another mode or time (the store then sets them itself).
function _withAttrs(fd: number, hint: _Ready): _Ready | undefined {
  futimesSync(fd, hint.time, hint.time);
  let st = fstatSync(fd);
  // Created with the mode the umask left, or an earlier blob's kept by the truncating open.
  if ((st.mode & 0o7777) !== hint.mode) {
    fchmodSync(fd, hint.mode);
    st = fstatSync(fd);
  }
  return (st.mode & 0o7777) === hint.mode ? { mode: hint.mode, time: hint.time, st } : undefined;
}

// Gives a staged blob its staging mode back, if it is there and ours to change.
function _stagingMode(blob: string): void {
  try {
    chmodSync(blob, 0o600);
  } catch {
    // not there (copied from the tree instead), or not ours: the copy says what fails
  }
}

// Sets abs's time (atime and mtime) to mtimeMs unless it has it already (hadMs); true when it set it.
function _retimed(abs: string, hadMs: number, mtimeMs: number): boolean {
  if (sameMtime(hadMs, mtimeMs)) return false;
  utimesSync(abs, utimeSeconds(mtimeMs), utimeSeconds(mtimeMs));
  return true;
}

// Gives a path imz just made (a moved file, a new directory) the mode and time the operation sent, where they differ.
// Best effort: the journal then records what the disk holds, which a pull brings to every replica.
// file: true for a regular file given them (or needing none); false for anything else, or when a change failed
// half-way. touched: its time was set (or may have been: a failure), so that a write made before shows nowhere.
function _giveAttrs(abs: string, mode: number, mtimeMs: number | undefined): { file: boolean; touched: boolean } {
  let touched = false;
  try {
    const st = lstatSync(abs);
    if (!st.isFile() && !st.isDirectory()) return { file: false, touched }; // (chmod would follow a symlink)
    if (mtimeMs !== undefined && mtimeMs !== 0 && st.isFile()) touched = _retimed(abs, st.mtimeMs, mtimeMs);
    // (A mode or time of 0: not sent.) The set-id and sticky bits it has stay: a directory made in a setgid one inherits setgid.
    if ((mode & 0o777) !== 0 && (st.mode & 0o777) !== (mode & 0o777)) chmodSync(abs, (st.mode & 0o7000) | (mode & 0o777));
    return { file: st.isFile(), touched };
  } catch {
    // (a time out of range, a file system without modes): the journal says what is there
    return { file: false, touched: true };
  }
}

// Opens a staged blob to finish it; one a batch gave a mode without write permission (for a store that was
// then refused, and a crash kept from being given back) gets its staging mode back first.
function _openStaged(blob: string): number {
  try {
    return openSync(blob, 'r+');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EACCES') throw err;
    chmodSync(blob, 0o600);
    return openSync(blob, 'r+');
  }
}

// Gives a file about to be renamed into the tree its mode and time, makes it durable, closes it; returns its stat.
function _finishFile(fd: number, mode: number, time: number): Stats {
  try {
    fchmodSync(fd, mode);
    futimesSync(fd, time, time);
    fsyncSync(fd);
    return fstatSync(fd);
  } finally {
    closeSync(fd);
  }
}

// Writes bytes into a new file, private to this process, and returns it open (removed again if writing fails: a
// full disk).
function _writeNew(file: string, bytes: Uint8Array): number {
  const fd = openSync(file, 'wx', 0o600);
  try {
    _writeAllSync(fd, bytes);
  } catch (err) {
    closeSync(fd);
    _unlinkQuiet(file);
    throw err;
  }
  return fd;
}

// Removes a file if it is there (rmSync's extra lstat and option handling cost more, per small file, than the unlink).
function _unlinkQuiet(file: string): void {
  try {
    unlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

function _result(op: Operation, status: OpResult['status'], version: number, extra: Partial<OpResult> & { altVersion?: number } = {}): OpResult {
  const { altVersion, ...rest } = extra;
  return { seq: op.seq, status, version: altVersion ?? version, server: null, conflictClass: '', keptAs: '', displaced: '', error: null, ...rest };
}

// True when the server already holds what the operation would produce.
function _sameResult(cur: TableEntry | undefined, op: Operation, from: TableEntry | undefined): boolean {
  switch (op.kind) {
    case OpKind.UNLINK:
    case OpKind.REMOVEDIR:
      return cur === undefined;
    case OpKind.MAKEDIR:
      return cur?.type === EntryType.DIR;
    case OpKind.LINK:
      return cur?.type === EntryType.SYMLINK && cur.target === op.state.target;
    case OpKind.STORE:
    case OpKind.SETATTR:
      // (A store of the same content with another mode: see _one.)
      return cur?.type === EntryType.FILE && cur.hash === Buffer.from(op.state.hash).toString('latin1') && (cur.mode & 0o7777) === (op.state.mode & 0o7777);
    case OpKind.MOVE:
      return from === undefined && cur?.type === EntryType.FILE && cur.hash === Buffer.from(op.state.hash).toString('latin1');
    default:
      return false;
  }
}

// True when a journal record of a file (a base version) holds the content the table's entry holds.
function _sameContent(base: Entry | undefined, cur: TableEntry): boolean {
  return base !== undefined && base.size === cur.size && Buffer.from(base.hash).toString('latin1') === cur.hash;
}

// A chmod of a file or directory this server no longer has as one, or a move whose source is gone here, that the
// client wins: its file comes back whole, as a store of the content it sent with it (see push's _carriesContent), and
// its directory as a mkdir with its mode.
function _storeWhereGone(op: Operation, cur: TableEntry | undefined, from: TableEntry | undefined): Operation {
  if (op.kind === OpKind.SETATTR && op.state?.type === EntryType.DIR && cur?.type !== EntryType.DIR) return { ...op, kind: OpKind.MAKEDIR };
  if (op.state?.type !== EntryType.FILE || op.state.hash.length !== 32) return op;
  const gone = op.kind === OpKind.SETATTR ? cur?.type !== EntryType.FILE : op.kind === OpKind.MOVE && from?.type !== EntryType.FILE;
  return gone ? { ...op, kind: OpKind.STORE, fromPath: '', fromBase: 0 } : op;
}

// A file or a link in a path's place: what replaces a directory there.
function _replacesDir(op: Operation): boolean {
  return op.kind === OpKind.STORE || op.kind === OpKind.LINK;
}

function _classify(cur: TableEntry | undefined, op: Operation): string {
  const removing = op.kind === OpKind.UNLINK || op.kind === OpKind.REMOVEDIR;
  if (removing) return cur ? 'remove/update' : 'remove/remove';
  if (!cur) return op.base === 0 ? 'create/create' : 'update/remove';
  if (op.base === 0) return 'create/create';
  if (op.state.type !== EntryType.NONE && op.state.type !== cur.type) return 'type-change';
  return 'update/update';
}


// A whole content received in one piece: refused unless it has the SHA-256 it came with.
function _checkWhole(data: Uint8Array, hash: Uint8Array): void {
  if (!sameHash(hashBytes(data), hash)) throw new ImzError(Codes.HASH_MISMATCH, 'cannot stage content: the bytes received do not match their SHA-256 (upload again)');
}

// True when the file's content has this SHA-256.
function _hashIs(file: string, hash: Uint8Array): boolean {
  return sameHash(hashFileSync(file), hash);
}
