// `imz resolve`: lists recorded conflicts, shows the difference of the two
// versions of a text file, and settles conflicts by taking the local
// version, the server's, or both. Nothing is lost: before any local content
// is replaced or removed it is copied to .imz/conflicts/blobs/<sha256> (a
// symlink's target and a non-empty directory's new name go to the resolution
// log, .imz/conflicts/resolved.jsonl), and every resolution is appended to
// that log. No terminal output here: the CLI prints what comes back.
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, renameSync, rmdirSync, symlinkSync, unlinkSync } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, join, posix, relative, resolve as resolvePath, sep } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { type Entry, EntryType, type EntryTypeCode } from '../protocol/messages.ts';
import { fsyncDir, tempNameFor } from './atomic_fs.ts';
import { type ConflictRecord, type ConflictSide, blobPath, clearConflict, conflictCopyName, freeName, keepName, listConflicts, outstanding, sideOfEntry } from './conflicts.ts';
import { isConflictCopy } from './changes.ts';
import { fetchFiles } from './fetcher.ts';
import { hashFile, toHex } from './hash.ts';
import { placedFacts } from './local_state.ts';
import { type IndexEntry, knownVersion } from './index_model.ts';
import { MAX_DIFF_LINES, unifiedDiff } from './line_diff.ts';
import { checkPath, depthOf } from './paths.ts';
import { reconcile } from './reconcile.ts';
import { type SecurityOptions, connectReplica } from './credentials.ts';
import type { Remote } from './remote.ts';
import { Replica } from './replica.ts';
import { type FsEntry, fsEntryAt, statEntrySync, utimeSeconds } from './tree_scan.ts';

/** Which version a resolution keeps at the conflicting path. */
export type Take = 'local' | 'server' | 'both';
export const TAKES: readonly Take[] = ['local', 'server', 'both'];

/** A conflict record with what the replica knows of it now. */
export interface ConflictDetails extends ConflictRecord {
  /** The index version the local side is based on (undefined when untracked). */
  base?: number;
  /** True when the server's content is kept in .imz/ (or nothing needs to be kept: not a file, or removed). */
  serverContentKept: boolean;
  /** True when the server-wins copy named by localCopy is still there. */
  localCopyPresent: boolean;
}

/** Where a displaced local version went. */
export interface KeptVersion {
  /** The path it was at (the conflicting path, or the server-wins copy). */
  from: string;
  /** blob: .imz/<where> (content-addressed); keep: a pushed name in the replica; copy: an unpushed conflict name in the replica; target: a symlink, whose target is recorded here and in the log. */
  as: 'blob' | 'keep' | 'copy' | 'target';
  where: string;
  hash?: string;
}

/** What resolving one path did. */
export interface Resolution {
  path: string;
  class: ConflictRecord['class'];
  take: Take;
  /** The server version the path is now based on (0: the server has no such path). */
  serverVersion: number;
  /** True when the server's content had to be fetched because it was not kept here (it may be newer than the recorded version). */
  fetched: boolean;
  /** What the next push sends for this path. */
  next: 'nothing' | 'update' | 'create' | 'remove';
  kept: KeptVersion[];
}

/** What a resolve run did. */
export interface ResolveSummary {
  resolved: Resolution[];
  /** --all: conflicts that could not be settled (the others were). */
  failed: { path: string; code: string; message: string }[];
  /** Conflicts still recorded afterwards. */
  remaining: number;
}

/** Options of resolveConflict. */
export interface ResolveOptions {
  /** The conflicting path, relative to dir (or to the replica root). */
  path?: string;
  /** Every recorded conflict (for cron and CI). */
  all?: boolean;
  take: Take;
  /** Token and TLS settings from the command line (over those saved at clone). */
  security?: SecurityOptions;
}

const RESOLVED_LOG = 'resolved.jsonl';
/** Largest file compared line by line. */
const MAX_TEXT_BYTES = 1024 * 1024;
/** Modes that cannot match a file's, so the next scan sees the path as changed. */
const NEVER = -1;

/** The recorded conflicts with what the replica knows of each (damaged: gets the records that do not read as ones). Read-only: no lock. */
export async function listConflictsDetailed(dir: string, damaged?: string[]): Promise<ConflictDetails[]> {
  const replica = await Replica.open(dir);
  const out: ConflictDetails[] = [];
  for (const c of await listConflicts(replica.stateDir, damaged)) out.push(await _details(replica, c));
  return out;
}

/** One conflict, found by a path relative to dir (or to the replica root); IMZ_NOT_FOUND when none is recorded. */
export async function conflictDetails(dir: string, path: string): Promise<ConflictDetails> {
  const replica = await Replica.open(dir);
  return _details(replica, _lookup(replica, dir, path, await listConflicts(replica.stateDir)));
}

async function _details(replica: Replica, c: ConflictRecord): Promise<ConflictDetails> {
  const idx = await replica.get(c.path).catch(() => undefined);
  let serverContentKept = true;
  if (c.server?.type === EntryType.FILE) serverContentKept = (await _serverBlob(replica, c)) !== undefined || (await _pathHolds(replica, c.path, c.server.hash));
  const localCopyPresent = c.localCopy ? fsEntryAt(replica.root, c.localCopy) !== undefined : false;
  return { ...c, base: knownVersion(idx?.version), serverContentKept, localCopyPresent };
}

/**
 * The difference between the local and the server's version of a
 * conflicting path: a unified diff (server as "---", local as "+++") when
 * both are text files (UTF-8, no NUL, at most 1 MiB, at most 5,000 lines),
 * otherwise one line describing the two sides. Read-only.
 */
export async function conflictDiff(dir: string, path: string): Promise<string> {
  const replica = await Replica.open(dir);
  const c = _lookup(replica, dir, path, await listConflicts(replica.stateDir));
  const localRel = c.localCopy && fsEntryAt(replica.root, c.localCopy) ? c.localCopy : c.path;
  const localFs = fsEntryAt(replica.root, localRel);
  const localHash = localFs?.type === EntryType.FILE ? await _hashOf(join(replica.root, localRel)) : undefined;
  const describe = (why: string) => `${why}: local ${_sideText(localFs ? { type: localFs.type, size: localFs.size, target: localFs.target || undefined, hash: localHash } : null)}; server ${_sideText(c.server)}`;
  if (!localFs || !c.server) return describe(localFs ? 'removed on the server' : 'removed locally');
  if (localFs.type !== EntryType.FILE || c.server.type !== EntryType.FILE) {
    if (localFs.type === EntryType.SYMLINK && c.server.type === EntryType.SYMLINK) return `symlinks differ: local -> ${localFs.target}; server -> ${c.server.target ?? '?'}`;
    return describe('not two files');
  }
  let serverFile = await _serverBlob(replica, c);
  if (!serverFile && localRel !== c.path && (await _pathHolds(replica, c.path, c.server.hash))) serverFile = join(replica.root, c.path);
  if (!serverFile) return describe('the server\'s content is not kept in this replica (`imz resolve --take server` fetches it)');
  const [a, b] = [await _text(serverFile), await _text(join(replica.root, localRel))];
  if (a === undefined || b === undefined) return describe('binary or larger than 1 MiB');
  const d = unifiedDiff(a, b, `server/${c.path}\tversion ${c.server.version ?? '?'}`, `local/${localRel}`);
  if (d === undefined) return describe(`files differ (more than ${MAX_DIFF_LINES} lines: too long to compare here)`);
  if (d === '') return describe('same content (only metadata differs)');
  return d;
}

/**
 * Settles the conflict of one path (or all of them) under the replica lock:
 *  - local: the path keeps (or gets back, from a server-wins copy) the local
 *    version and its index entry is set to the server's state with stat
 *    facts that cannot match, so the next push sends the local version
 *    based on the server's (a create when the server removed the path, a
 *    remove when the local side removed it);
 *  - server: the path gets the server's version (from .imz/conflicts/blobs,
 *    or fetched when not kept there), written atomically, and is clean;
 *  - both: the local version moves to name.imz-keep-<replica>-<version>.ext
 *    (which the next push sends), then as server.
 * Local content replaced or removed is first copied to .imz/conflicts/blobs.
 * The record is cleared last, after the data and the index are durable, so
 * an interrupted resolve can simply be run again.
 */
export async function resolveConflict(dir: string, opts: ResolveOptions): Promise<ResolveSummary> {
  if (!TAKES.includes(opts.take)) throw new ImzError(Codes.BAD_USAGE, `cannot resolve: --take must be one of ${TAKES.join(', ')}`);
  if (!opts.all === (opts.path === undefined)) throw new ImzError(Codes.BAD_USAGE, 'cannot resolve: name one PATH, or pass --all');
  const replica = await Replica.open(dir);
  await replica.lock();
  const ctx = new _Ctx(replica, opts.security);
  try {
    await replica.sweepTemps();
    const records = await listConflicts(replica.stateDir);
    const targets = opts.all ? records : [_lookup(replica, dir, opts.path!, records)];
    // Deepest first: a directory is settled after what was recorded inside it.
    targets.sort((a, b) => depthOf(b.path) - depthOf(a.path) || (a.path < b.path ? -1 : 1));
    // Which directories were removed here, read before any is settled: taking the server's version of a path inside
    // one makes the directory again, and it then looked kept, its other entries never fetched.
    const removedHere = new Set(targets.filter((c) => _removedHere(c, fsEntryAt(replica.root, c.path))).map((c) => c.path));
    const summary: ResolveSummary = { resolved: [], failed: [], remaining: 0 };
    for (const c of targets) {
      try {
        summary.resolved.push(await _resolveOne(ctx, c, opts.take, removedHere.has(c.path)));
      } catch (err) {
        if (!opts.all) throw err;
        const e = err as { code?: string; message?: string };
        summary.failed.push({ path: c.path, code: typeof e.code === 'string' && e.code.startsWith('IMZ_') ? e.code : Codes.INTERNAL, message: e.message ?? String(err) });
      }
    }
    summary.remaining = outstanding(await listConflicts(replica.stateDir)).length;
    return summary;
  } finally {
    ctx.close();
    await replica.clearTempDirs().catch(() => {});
    await replica.unlock();
  }
}

// ---------- one resolution ----------

class _Ctx {
  readonly replica: Replica;
  private _remote: Remote | undefined;
  private _security: SecurityOptions | undefined;

  constructor(replica: Replica, security: SecurityOptions | undefined) {
    this.replica = replica;
    this._security = security;
  }

  /** The server, connected on first use (only when content is not kept here). */
  async remote(): Promise<Remote> {
    if (this._remote) return this._remote;
    const r = await connectReplica(this.replica, this._security);
    if (r.info.serverId !== this.replica.head.serverId) {
      r.close();
      throw new ImzError(Codes.IDENTITY, `cannot fetch the server's version: the server at ${r.address} is not the one this replica follows; run \`imz pull --resync\` first`);
    }
    this._remote = r;
    return r;
  }

  close(): void {
    this._remote?.close();
    this._remote = undefined;
  }
}

/** The server's state a path is to get (null: removed there). */
interface _ServerState {
  type: EntryTypeCode;
  version: number;
  hash: string;
  size: number;
  mtimeMs?: number;
  mode?: number;
  target: string;
}

async function _resolveOne(ctx: _Ctx, c: ConflictRecord, take: Take, removedHere: boolean): Promise<Resolution> {
  const replica = ctx.replica;
  checkPath(c.path, 'resolve a conflict');
  if (c.localCopy) checkPath(c.localCopy, 'resolve a conflict');
  const res: Resolution = { path: c.path, class: c.class, take, serverVersion: c.server?.version ?? 0, fetched: false, next: 'nothing', kept: [] };
  const copyFs = c.localCopy ? fsEntryAt(replica.root, c.localCopy) : undefined;
  if (c.resolvedBy && c.resolvedBy !== 'server-wins' && !(copyFs && isConflictCopy(c.localCopy!))) {
    // A policy already kept both versions in place (keep-both's copy is a
    // replicated file; client-wins' loser is on the server): settling it
    // only takes the record off the list, nothing is moved. (newest, and
    // keep-both where the server could not keep both, leave ours as a
    // conflict copy, as server-wins does: that is settled as server-wins'.)
    await clearConflict(replica.stateDir, c.path);
    return res;
  }

  if (take === 'local') {
    if (copyFs) {
      // server-wins left the server's version at the path and ours as a copy: swap back.
      await _setAside(ctx, c.path, c, res, { replacing: true, copyFallback: false });
      _ensureParents(replica.root, c.path);
      renameSync(join(replica.root, c.localCopy!), join(replica.root, c.path));
      await fsyncDir(dirname(join(replica.root, c.path)));
      await fsyncDir(dirname(join(replica.root, c.localCopy!)));
    }
    const now = fsEntryAt(replica.root, c.path);
    // (So does a directory made a file or a link here: its entries on the server go before ours takes its place.
    // Without them indexed, each push met the directory holding them, the same conflict again.) Not where a policy
    // had taken the directory and ours came back from its copy: the index holds what was taken, at the versions
    // taken, and a change made there since meets the push as a conflict. Found at pull, only what this replica's
    // cursor has passed (what the conflict held back): a change made after it is a conflict for the push too.
    // Indexed at the server's current versions, each was removed there unseen.
    const replacedDir = c.class === 'type-change' && c.server?.type === EntryType.DIR && now !== undefined && now.type !== EntryType.DIR;
    let listed: Entry | undefined;
    if (removedHere && !now) await _removeServerSide(ctx, c, res);
    else if (replacedDir && !copyFs) listed = await _removeServerSide(ctx, c, res, c.at === 'pull' ? replica.head.cursor : undefined);
    if (!c.server) {
      await replica.delete(c.path);
      res.next = now ? 'create' : 'nothing';
    } else {
      // (The directory itself at the version listed: a chmod of it there is no content to lose, and based on the
      // record's, ours met it after the push had removed what was inside, leaving it empty there.)
      await replica.set(c.path, _staleEntry(listed?.type === EntryType.DIR ? sideOfEntry(listed) : c.server));
      res.next = now ? 'update' : 'remove';
    }
  } else {
    // A tracked directory made a file or a link here: what the index holds inside it is the server's directory as it
    // was, and comes back with it (left in the index, it read as removed here, and the next push removed it there).
    const here = fsEntryAt(replica.root, c.path);
    const replacedDir = c.server?.type === EntryType.DIR && here !== undefined && here.type !== EntryType.DIR;
    if (take === 'both') {
      // Ours goes under a name the next push sends: the server ends up with both.
      // (The path already holding the server's version is a rerun of an interrupted resolve: ours went before.)
      const fromRel = copyFs ? c.localCopy! : here && !(await _holdsServers(replica.root, c, here)) ? c.path : undefined;
      if (fromRel) {
        const idx = await replica.get(c.path);
        const name = freeName(replica.root, keepName(c.path, replica.config.replicaId, c.server?.version ?? knownVersion(idx?.version) ?? 0));
        _ensureParents(replica.root, name);
        const moved = fsEntryAt(replica.root, fromRel);
        renameSync(join(replica.root, fromRel), join(replica.root, name));
        // What was tracked inside a directory moved with it (and is sent again under the new name).
        if (moved?.type === EntryType.DIR) await replica.forgetInside(fromRel);
        await fsyncDir(dirname(join(replica.root, name)));
        await fsyncDir(dirname(join(replica.root, fromRel)));
        res.kept.push({ from: fromRel, as: 'keep', where: name });
        res.next = 'create';
      }
    }
    // A directory removed here: the server's whole directory comes back, what was removed inside it too.
    if (removedHere || replacedDir) await replica.forgetInside(c.path);
    await _takeServer(ctx, c, res, removedHere);
    // The server-wins copy (still there under take server): keep it, then remove it.
    if (take === 'server' && c.localCopy && fsEntryAt(replica.root, c.localCopy)) {
      await _setAside(ctx, c.localCopy, c, res, { replacing: false, copyFallback: false });
    }
  }

  await replica.flushIndex();
  await _log(replica, { time: new Date().toISOString(), path: c.path, class: c.class, at: c.at, take, local: c.local, server: c.server, serverVersion: res.serverVersion, fetched: res.fetched, kept: res.kept });
  await clearConflict(replica.stateDir, c.path);
  return res;
}

// The path gets the server's state; whatever local content is there is kept first.
async function _takeServer(ctx: _Ctx, c: ConflictRecord, res: Resolution, removedHere = false): Promise<void> {
  const replica = ctx.replica;
  const root = replica.root;
  const abs = join(root, c.path);
  let state: _ServerState | null = c.server ? _stateOf(c.server) : null;

  // Local content first goes to the blobs: when it is the server's content, that is also our source.
  const cur = fsEntryAt(root, c.path);
  if (cur?.type === EntryType.FILE) res.kept.push(await _keepFile(replica, c.path));

  // A file from the kept blob, else fetched (then the server's current state is what we take).
  let tmp: string | undefined;
  if (state?.type === EntryType.FILE) {
    _ensureParents(root, c.path);
    await replica.noteTempDirs([relative(root, dirname(abs))]);
    tmp = tempNameFor(abs);
    const blob = await _serverBlob(replica, c);
    const mode = state.mode ?? (blob ? (await stat(blob)).mode & 0o777 : 0o644);
    state.mode = mode;
    if (!blob || !(await _copyVerified(blob, tmp, state.hash, mode, state.mtimeMs))) {
      state = await _fetchCurrent(ctx, c.path);
      res.fetched = true;
      res.serverVersion = state?.version ?? 0;
      if (state?.type === EntryType.FILE) {
        if (!(await _copyVerified(join(replica.stateDir, blobPath(state.hash)), tmp, state.hash, state.mode ?? 0o644, state.mtimeMs))) {
          throw new ImzError(Codes.HASH_MISMATCH, `cannot take the server's version of ${c.path}: the content fetched does not match its SHA-256`);
        }
      } else tmp = undefined;
    }
  }
  // A directory made here from something else (or removed here, even if settling a path inside made it again) needs
  // its contents from the server: connect before changing anything.
  // (So does one a killed pull began to take whole: what is here of it may be a part.)
  const wantsTree = state?.type === EntryType.DIR && (cur?.type !== EntryType.DIR || removedHere || c.takingWhole === true);
  const remote = wantsTree ? await ctx.remote() : undefined;
  const inside: Entry[] = [];

  try {
    const now = fsEntryAt(root, c.path);
    // The placed file's own facts before its rename, to tell them from a write made just after it.
    let placed: { size: number; mtimeMs: number } | undefined;
    if (!state) {
      if (now) await _setAside(ctx, c.path, c, res, { replacing: false, copyFallback: true });
      await _forget(replica, c.path);
      return;
    }
    if (state.type === EntryType.FILE) {
      if (now && now.type !== EntryType.FILE) await _setAside(ctx, c.path, c, res, { replacing: true, copyFallback: true });
      placed = lstatSync(tmp!);
      renameSync(tmp!, abs);
      tmp = undefined;
      await fsyncDir(dirname(abs));
    } else if (state.type === EntryType.SYMLINK) {
      _ensureParents(root, c.path);
      const t = tempNameFor(abs);
      symlinkSync(state.target, t);
      try {
        if (now) await _setAside(ctx, c.path, c, res, { replacing: true, copyFallback: true });
        renameSync(t, abs);
      } catch (err) {
        await rm(t, { force: true });
        throw err;
      }
      await fsyncDir(dirname(abs));
    } else if (state.type === EntryType.DIR) {
      if (now && now.type !== EntryType.DIR) await _setAside(ctx, c.path, c, res, { replacing: false, copyFallback: true });
      if (remote) {
        // What the server has inside (the journal replay went past it while it was a conflict), and the directory's mode.
        for await (const b of remote.list(c.path)) {
          for (const e of b.entries) {
            if (e.path !== c.path) inside.push(e);
            else if (e.type === EntryType.DIR) state.mode = e.mode & 0o777;
          }
        }
      }
      _ensureParents(root, c.path);
      if (!fsEntryAt(root, c.path)) mkdirSync(abs, state.mode ?? 0o755);
      if (state.mode !== undefined) await chmod(abs, state.mode & 0o777);
      await fsyncDir(dirname(abs));
    }
    const here = fsEntryAt(root, c.path);
    if (!here) throw new ImzError(Codes.IO, `cannot take the server's version of ${c.path}: it vanished while being written`);
    const fs = placed ? placedFacts(here, placed) : here;
    await replica.set(c.path, { type: state.type, version: state.version, hash: state.type === EntryType.FILE ? state.hash : '', size: fs.size, mode: fs.mode, mtimeMs: fs.mtimeMs, ctimeMs: fs.ctimeMs, ino: fs.ino, target: fs.target });
    if (remote && inside.length > 0) {
      await replica.flushIndex();
      await reconcile(replica, remote, inside);
    }
  } finally {
    if (tmp) await rm(tmp, { force: true });
  }
}

// The server's current state of a path (its content fetched into the blobs), or null when it has none.
async function _fetchCurrent(ctx: _Ctx, path: string): Promise<_ServerState | null> {
  const remote = await ctx.remote();
  let e: Entry;
  try {
    e = await remote.stat(path);
  } catch (err) {
    if (err instanceof ImzError && err.code === Codes.NOT_FOUND) return null;
    throw err;
  }
  if (e.type === EntryType.NONE) return null;
  const state: _ServerState = { type: e.type, version: e.version, hash: e.type === EntryType.FILE ? toHex(e.hash) : '', size: e.size, mtimeMs: e.mtimeMs, mode: e.mode & 0o777, target: e.target };
  if (e.type !== EntryType.FILE) return state;
  const dest = join(ctx.replica.stateDir, blobPath(state.hash));
  await mkdir(dirname(dest), { recursive: true });
  const { stale } = await fetchFiles(remote, [{ entry: e, dest }], async (batch) => {
    for (const f of batch) await rename(f.tmp, f.item.dest);
  });
  if (stale.length > 0) throw new ImzError(Codes.STALE, `cannot take the server's version of ${path}: it changed on the server while being fetched; run the command again`);
  await fsyncDir(dirname(dest));
  return state;
}

/**
 * Moves local content out of the way, keeping it: a file's content goes to
 * the blobs (then the file is removed unless a rename will replace it), a
 * symlink's target is recorded, an empty directory is removed, a non-empty
 * one is renamed to a conflict-copy name (never pushed) when copyFallback,
 * or refused.
 */
async function _setAside(ctx: _Ctx, rel: string, c: ConflictRecord, res: Resolution, opts: { replacing: boolean; copyFallback: boolean }): Promise<void> {
  const replica = ctx.replica;
  const abs = join(replica.root, rel);
  const fs = fsEntryAt(replica.root, rel);
  if (!fs) return;
  if (fs.type === EntryType.FILE) {
    if (!res.kept.some((k) => k.from === rel && k.as === 'blob')) res.kept.push(await _keepFile(replica, rel));
    if (!opts.replacing) {
      unlinkSync(abs);
      await fsyncDir(dirname(abs));
    }
    return;
  }
  if (fs.type === EntryType.SYMLINK) {
    res.kept.push({ from: rel, as: 'target', where: fs.target });
    if (!opts.replacing) {
      unlinkSync(abs);
      await fsyncDir(dirname(abs));
    }
    return;
  }
  // A directory: nothing to keep when empty; otherwise moved aside whole.
  if (readdirSync(abs).length === 0) {
    rmdirSync(abs);
    await fsyncDir(dirname(abs));
    return;
  }
  if (!opts.copyFallback) {
    throw new ImzError(Codes.NOT_EMPTY, `cannot resolve ${c.path}: ${rel} is a directory that is not empty; move its contents away first`);
  }
  const name = freeName(replica.root, conflictCopyName(rel, replica.config.replicaId, c.server?.version ?? (await replica.get(c.path))?.version ?? 0));
  renameSync(abs, join(replica.root, name));
  await fsyncDir(dirname(abs));
  res.kept.push({ from: rel, as: 'copy', where: name });
  // What was tracked inside went with it (the copy is never pushed).
  await replica.forgetInside(rel);
}

// Forgets a path and anything tracked under it in the index.
async function _forget(replica: Replica, path: string): Promise<void> {
  await replica.delete(path);
  await replica.forgetInside(path);
}


/** Copies a replica file into .imz/conflicts/blobs/<sha256> (unless there) and says where. */
async function _keepFile(replica: Replica, rel: string): Promise<KeptVersion> {
  const dir = join(replica.stateDir, 'conflicts', 'blobs');
  await mkdir(dir, { recursive: true });
  await replica.noteTempDirs([relative(replica.root, dir)]);
  const tmp = tempNameFor(join(dir, 'kept'));
  const src = await open(join(replica.root, rel), 'r');
  let hex: string;
  try {
    const st = await src.stat();
    const dst = await open(tmp, 'wx', 0o600);
    try {
      hex = await _copyHashing(src, dst);
      await dst.chmod(st.mode & 0o777);
      await dst.utimes(utimeSeconds(st.mtimeMs), utimeSeconds(st.mtimeMs));
      await dst.datasync();
    } finally {
      await dst.close();
    }
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  } finally {
    await src.close();
  }
  const final = join(dir, hex);
  if (lstatSync(final, { throwIfNoEntry: false })) await rm(tmp, { force: true });
  else {
    await rename(tmp, final);
    await fsyncDir(dir);
  }
  return { from: rel, as: 'blob', where: blobPath(hex), hash: hex };
}

/** Copies an open file into another in chunks; returns the hex SHA-256 of what was copied. */
async function _copyHashing(src: FileHandle, dst: FileHandle): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(1024 * 1024);
  for (;;) {
    const { bytesRead } = await src.read(buf, 0, buf.length, null);
    if (bytesRead === 0) break;
    h.update(buf.subarray(0, bytesRead));
    await dst.write(buf, 0, bytesRead);
  }
  return h.digest('hex');
}

/** Copies src to a new file tmp, checking its SHA-256; false (and no tmp) when it does not match or src is gone. */
async function _copyVerified(src: string, tmp: string, hashHex: string, mode: number, mtimeMs: number | undefined): Promise<boolean> {
  let s;
  try {
    s = await open(src, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  let ok = false;
  try {
    const d = await open(tmp, 'wx', mode & 0o777);
    try {
      ok = (await _copyHashing(s, d)) === hashHex;
      if (ok) {
        await d.chmod(mode & 0o777);
        if (mtimeMs !== undefined) await d.utimes(utimeSeconds(mtimeMs), utimeSeconds(mtimeMs));
        await d.datasync();
      }
    } finally {
      await d.close();
    }
  } finally {
    await s.close();
    if (!ok) await rm(tmp, { force: true });
  }
  return ok;
}

/** Appends one resolution to .imz/conflicts/resolved.jsonl, durably. */
async function _log(replica: Replica, entry: Record<string, unknown>): Promise<void> {
  const dir = join(replica.stateDir, 'conflicts');
  await mkdir(dir, { recursive: true });
  const fh = await open(join(dir, RESOLVED_LOG), 'a', 0o644);
  try {
    await fh.write(JSON.stringify(entry) + '\n');
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

// ---------- helpers ----------

// take local on a directory removed here to which the server added
// entries this replica never had: every file the server holds under it is
// fetched into the blobs first (the versions that lose stay here, listed in
// the resolve log), then all its entries are indexed at the versions
// fetched, so the next push removes them there too. A server change made
// after this is a conflict for that push, as usual.
async function _removeServerSide(ctx: _Ctx, c: ConflictRecord, res: Resolution, seenUpTo?: number): Promise<Entry | undefined> {
  const replica = ctx.replica;
  const remote = await ctx.remote();
  const inside: Entry[] = [];
  let self: Entry | undefined;
  for await (const b of remote.list(c.path)) {
    for (const e of b.entries) {
      checkPath(e.path, 'resolve a conflict');
      if (e.path !== c.path && !e.path.startsWith(`${c.path}/`)) throw new ImzError(Codes.PROTOCOL, `cannot resolve ${c.path}: the server listed ${JSON.stringify(e.path).slice(0, 200)} as inside it`);
      if (e.path === c.path) self = e;
      // (seenUpTo: a version above it is a change this replica never saw: left out, the push meets it.)
      if (seenUpTo === undefined || e.version <= seenUpTo || e.path === c.path) inside.push(e);
    }
  }
  const files = inside.filter((e) => e.type === EntryType.FILE);
  if (files.length > 0) {
    const dir = join(replica.stateDir, 'conflicts', 'blobs');
    await mkdir(dir, { recursive: true });
    const { stale } = await fetchFiles(remote, files.map((e) => ({ entry: e, dest: join(replica.stateDir, blobPath(toHex(e.hash))) })), async (batch) => {
      for (const f of batch) await rename(f.tmp, f.item.dest);
    });
    if (stale.length > 0) throw new ImzError(Codes.STALE, `cannot keep the server's files under ${c.path}: they changed on the server while being fetched; run the command again`);
    await fsyncDir(dir);
  }
  for (const e of inside) {
    if (e.type === EntryType.FILE) res.kept.push({ from: e.path, as: 'blob', where: blobPath(toHex(e.hash)), hash: toHex(e.hash) });
    else if (e.type === EntryType.SYMLINK) res.kept.push({ from: e.path, as: 'target', where: e.target });
    await replica.set(e.path, _staleEntry(sideOfEntry(e)));
  }
  return self;
}

// A dir-removed conflict still open as it was found: the directory removed here, the server's still there. Found by a
// pull, or by a push whose removal the server refused (it holds entries this replica never had, or, on demand, never
// fetched): either way the entries the server holds inside are not in the index as the server has them, and a removal
// of the directory alone meets the same conflict again.
function _removedHere(c: ConflictRecord, now: FsEntry | undefined): boolean {
  return c.class === 'dir-removed' && c.local === null && c.server?.type === EntryType.DIR && now === undefined;
}

// True when the path holds what the conflict's server side is (a file of its content, a symlink to its target).
async function _holdsServers(root: string, c: ConflictRecord, here: FsEntry): Promise<boolean> {
  const s = c.server;
  if (!s || s.type !== here.type) return false;
  if (here.type === EntryType.FILE) return s.hash !== undefined && here.size === s.size && toHex(await hashFile(join(root, c.path))) === s.hash;
  return here.type === EntryType.SYMLINK && here.target === s.target;
}

/** An index entry at the server's state whose stat facts never match a file, so the next scan compares (and pushes) the local version. */
function _staleEntry(s: ConflictSide): IndexEntry {
  return { type: s.type as EntryTypeCode, version: s.version ?? 0, hash: s.hash ?? '', size: NEVER, mode: NEVER, mtimeMs: 0, ctimeMs: 0, ino: 0, target: s.target ?? '' };
}

function _stateOf(s: ConflictSide): _ServerState {
  return { type: s.type as EntryTypeCode, version: s.version ?? 0, hash: s.hash ?? '', size: s.size ?? 0, mtimeMs: s.mtimeMs, mode: s.mode === undefined ? undefined : s.mode & 0o777, target: s.target ?? '' };
}

/** The kept server content of a conflicting file (absolute), if it is there. */
async function _serverBlob(replica: Replica, c: ConflictRecord): Promise<string | undefined> {
  const names = [c.serverBlob, c.server?.hash ? blobPath(c.server.hash) : undefined];
  for (const n of names) {
    if (!n) continue;
    const abs = join(replica.stateDir, n);
    // Only inside .imz/conflicts/blobs: the record is data, not a path to trust.
    if (relative(join(replica.stateDir, 'conflicts', 'blobs'), abs).includes('..')) continue;
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (st?.isFile()) return abs;
  }
  return undefined;
}

/** True when the replica file at rel has the given content hash (hashing only when the size allows it). */
async function _pathHolds(replica: Replica, rel: string, hashHex: string | undefined): Promise<boolean> {
  if (!hashHex) return false;
  const fs = fsEntryAt(replica.root, rel);
  if (!fs || fs.type !== EntryType.FILE) return false;
  return (await _hashOf(join(replica.root, rel))) === hashHex;
}

/** Hex SHA-256 of a file. */
async function _hashOf(abs: string): Promise<string> {
  return toHex(await hashFile(abs));
}

/** lstat of a replica path: undefined when absent (or not something imz replicates). */
/** Makes sure every parent of rel is a real directory (never a symlink), creating missing ones. */
function _ensureParents(root: string, rel: string): void {
  const parts = rel.split('/');
  let cur = '';
  for (let i = 0; i < parts.length - 1; i++) {
    cur = cur === '' ? parts[i]! : `${cur}/${parts[i]}`;
    const abs = join(root, cur);
    let st = lstatSync(abs, { throwIfNoEntry: false });
    if (!st) {
      mkdirSync(abs, 0o755);
      st = lstatSync(abs);
    }
    if (!st.isDirectory()) throw new ImzError(Codes.BAD_PATH, `cannot write ${rel}: ${cur} in the replica is not a directory (it is ${st.isSymbolicLink() ? 'a symlink' : 'a file'}); imz never writes through it`);
  }
}

/** Finds the record of a path given relative to dir (as a shell user means it) or to the replica root. */
function _lookup(replica: Replica, dir: string, path: string, records: ConflictRecord[]): ConflictRecord {
  const byPath = new Map(records.map((c) => [c.path, c]));
  const candidates: string[] = [];
  const fromDir = relative(replica.root, resolvePath(dir, path)).split(sep).join('/');
  if (fromDir !== '' && !fromDir.startsWith('..') && !isAbsolute(fromDir)) candidates.push(fromDir);
  const asGiven = posix.normalize(path.split(sep).join('/')).replace(/\/+$/, '');
  candidates.push(asGiven.replace(/^\.\//, ''));
  for (const p of candidates) {
    const c = byPath.get(p);
    if (c) return c;
  }
  throw new ImzError(Codes.NOT_FOUND, `cannot resolve ${path}: no conflict recorded for it (\`imz resolve --list\` shows the conflicts)`);
}

/** Reads a file as text when it is small, valid UTF-8 and has no NUL; undefined otherwise. */
async function _text(abs: string): Promise<string | undefined> {
  const st = await stat(abs);
  if (st.size > MAX_TEXT_BYTES) return undefined;
  const bytes = await readFile(abs);
  if (bytes.includes(0)) return undefined;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}

const TYPE_NAMES: Record<number, string> = { [EntryType.FILE]: 'file', [EntryType.DIR]: 'directory', [EntryType.SYMLINK]: 'symlink' };

/** A type code as a word. */
export function typeName(t: number | undefined): string {
  return t === undefined ? 'none' : (TYPE_NAMES[t] ?? `type ${t}`);
}

function _sideText(s: ConflictSide | null): string {
  if (!s) return 'removed';
  const parts = [typeName(s.type)];
  if (s.version !== undefined) parts.push(`version ${s.version}`);
  if (s.type === EntryType.FILE && s.size !== undefined) parts.push(`${s.size} bytes`);
  if (s.hash) parts.push(`sha256 ${s.hash.slice(0, 12)}`);
  if (s.target) parts.push(`-> ${s.target}`);
  return parts.join(', ');
}
