import { chmodSync, existsSync, lstatSync, mkdirSync, renameSync, rmdirSync, symlinkSync, unlinkSync, utimesSync } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { type Entry, EntryType } from '../protocol/messages.ts';
import { fsyncDir, fsyncDirSync, inParallel, tempNameFor } from './atomic_fs.ts';
import { type ConflictClass, type ConflictRecord, type ConflictSide, blobPath, clearConflict, conflictCopyName, freeName, keepName, listConflicts, outstanding, saveConflict, sideOfEntry } from './conflicts.ts';
import { type FetchItem, type FetchProgress, fetchFiles, tempDirsOf } from './fetcher.ts';
import { hashFile, toHex } from './hash.ts';
import { IGNORE_FILE } from './ignore_rules.ts';
import type { IndexEntry } from './index_model.ts';
import { type LocalState, localStateOf, placedFacts } from './local_state.ts';
import { checkPath, depthOf, parentOf } from './paths.ts';
import type { Remote } from './remote.ts';
import type { Replica } from './replica.ts';
import { type FsEntry, fsEntryAt, fsEntryFromStats, sameMtime, statEntrySync, utimeSeconds } from './tree_scan.ts';

/** Something reconcile did or found, for progress output. */
export type ReconcileEvent =
  | { type: 'change'; path: string; action: 'create' | 'update' | 'remove' | 'mkdir' | 'rmdir' | 'symlink' | 'meta' | 'remote'; entry?: Entry; wasRemote?: boolean }
  | { type: 'conflict'; conflict: ConflictRecord }
  | { type: 'progress'; files: number; bytes: number; totalFiles: number; totalBytes: number };

/** What a reconcile run did. */
export interface ReconcileResult {
  changed: number;
  conflicts: ConflictRecord[];
  /** Files that changed on the server while being fetched (a later pull brings them). */
  stale: string[];
  files: number;
  bytes: number;
}

type _Plan =
  | { kind: 'remove'; t: Entry; local: LocalState }
  | { kind: 'mkdir'; t: Entry; local: LocalState }
  | { kind: 'symlink'; t: Entry; local: LocalState }
  | { kind: 'file'; t: Entry; local: LocalState; keepMode?: number }
  | { kind: 'meta'; t: Entry; local: LocalState }
  | { kind: 'index'; t: Entry; local: LocalState; localMode?: boolean }
  | { kind: 'remote'; t: Entry; local: LocalState };

/** Options of reconcile. */
export interface ReconcileOptions {
  /** On-demand replicas: fetch these files' content (others only get their namespace entry). */
  fetch?: Set<string>;
}

/**
 * Brings replica paths to the server states in targets (type NONE = removed)
 * without ever overwriting a local modification: such paths become conflicts,
 * with the server's content kept in .imz/conflicts/. Files are fetched into
 * temp files, verified, fsynced and renamed into place; the index is updated
 * only after the data is durable. The caller saves HEAD afterwards.
 */
export async function reconcile(replica: Replica, remote: Remote, targets: Entry[], onEvent?: (e: ReconcileEvent) => void, policy = 'manual', opts: ReconcileOptions = {}): Promise<ReconcileResult> {
  const root = replica.root;
  const onDemand = replica.config.mode === 'on-demand';
  const result: ReconcileResult = { changed: 0, conflicts: [], stale: [], files: 0, bytes: 0 };
  const plans: _Plan[] = [];
  const conflictFetch: { t: Entry; c: ConflictRecord }[] = [];
  // Open conflicts a server change now settles; records kept by a policy stay listed.
  const records = await listConflicts(replica.stateDir);
  const recorded = new Set(outstanding(records).map((c) => c.path));
  const settle = async (path: string) => {
    if (recorded.delete(path)) await clearConflict(replica.stateDir, path);
  };

  // Directories absent here: their contents are absent too, without a stat
  // each (targets come parents first, as the server lists them).
  const absentDirs = new Set<string>();
  // Paths left in conflict as something other than a directory: what the
  // server put under them waits for that conflict's resolution (resolve
  // --take server fetches it), instead of failing the whole pull.
  const blocked = new Set<string>();
  const underBlocked = (p: string) => {
    for (let i = p.indexOf('/'); i > 0; i = p.indexOf('/', i + 1)) if (blocked.has(p.slice(0, i))) return true;
    return false;
  };
  // Tracked directories removed here (not pushed yet), as the server's
  // directory entry they were: the topmost one at or above a directory,
  // looked up once per directory.
  const removedAt = new Map<string, Entry | undefined>();
  const removedConflicts = new Set<string>();
  const removedAbove = async (dir: string): Promise<Entry | undefined> => {
    if (dir === '') return undefined;
    if (removedAt.has(dir)) return removedAt.get(dir);
    let r = await removedAbove(parentOf(dir));
    if (r === undefined) {
      const idx = await replica.get(dir);
      // (Never looked at through a symlink: parentsAreDirs first.)
      if (idx?.type === EntryType.DIR && !idx.remote && parentsAreDirs(dir) && !lstatSync(join(root, dir), { throwIfNoEntry: false })) {
        r = { path: dir, type: EntryType.DIR, size: 0, mode: idx.mode & 0o777, mtimeMs: idx.mtimeMs, hash: new Uint8Array(0), target: '', version: idx.version };
      }
    }
    removedAt.set(dir, r);
    return r;
  };
  // Everything from the wire is checked before anything is written (Invariant 3).
  for (const t of targets) _checkEntry(t);
  _checkNesting(targets);
  // Whether every existing parent of a path is a real directory: a symlink
  // is a leaf of the replica, nothing lies under it here, and lstat must
  // never look (let alone write) through it.
  const parentOk = new Map<string, boolean>([['', true]]);
  const parentsAreDirs = (p: string): boolean => {
    const dir = parentOf(p);
    let ok = parentOk.get(dir);
    if (ok === undefined) {
      ok = parentsAreDirs(dir) && _dirOrAbsent(join(root, dir));
      parentOk.set(dir, ok);
    }
    return ok;
  };
  // Tracked directories made something else here (a symlink, a file; not pushed yet): the server's changes inside
  // are a type-change conflict on that directory, and wait with it (they failed the whole pull, every time, the
  // cursor stuck and nothing else arriving).
  const replacedConflicts = new Set<string>();
  const replacedAbove = async (dir: string): Promise<string | undefined> => {
    for (let d = dir, top: string | undefined; ; d = parentOf(d)) {
      if (d === '') return top;
      const st = parentsAreDirs(d) ? lstatSync(join(root, d), { throwIfNoEntry: false }) : undefined;
      if (st && !st.isDirectory() && (await replica.get(d))?.type === EntryType.DIR) top = d;
    }
  };
  // The server added t inside a directory this replica removed (a removal not pushed yet): a dir-removed conflict on
  // that directory. True when t waits with it.
  const waitsInRemoved = async (t: Entry): Promise<boolean> => {
    const gone = await removedAbove(parentOf(t.path));
    if (gone === undefined) return false;
    if (!removedConflicts.has(gone.path)) {
      removedConflicts.add(gone.path);
      // manual: the directory stays removed, as the user left it; what the server added waits on the server
      // (resolve --take server fetches it). client-wins: the same, and the next push removes it there (the
      // server keeps what it displaces). Otherwise the server's side wins: its additions come back here.
      _conflict(result, onEvent, undefined, gone, 'dir-removed', { kind: 'deleted' }, policy === 'manual' ? undefined : { resolvedBy: policy });
    }
    if (policy !== 'manual' && policy !== 'client-wins') return false;
    blocked.add(gone.path);
    return true;
  };
  // Under a policy that can give such a directory to the server's side: ours moves aside, the server's comes whole.
  const keptHere = new Set<string>();
  const takenWhole: ConflictRecord[] = [];
  targets = await _takeReplacedDirs(replica, remote, targets, policy, {
    replacedAbove: async (p) => (parentsAreDirs(p) ? undefined : await replacedAbove(parentOf(p))),
    moved: () => {
      parentOk.clear();
      parentOk.set('', true);
    },
    conflict: (server, local, settled) => _conflict(result, onEvent, undefined, server, 'type-change', local, settled),
    keptHere,
    takenWhole,
    records,
    parentsAreDirs,
    replacedAt: async (p) => {
      if (!parentsAreDirs(p)) return undefined;
      const st = lstatSync(join(root, p), { throwIfNoEntry: false });
      return st && !st.isDirectory() && (await replica.get(p))?.type === EntryType.DIR ? p : undefined;
    },
  });
  for (const t of targets) {
    if (blocked.size > 0 && underBlocked(t.path)) continue;
    if (!parentsAreDirs(t.path)) {
      const dir = await replacedAbove(parentOf(t.path));
      if (dir !== undefined && t.type === EntryType.NONE) {
        // Removed there, and nothing of it here either (nothing lies under our link or file): the same result, not a
        // conflict. (Left tracked, it read as a removal to push, and the first warning said the pull left it.)
        if (await replica.get(t.path)) {
          await replica.delete(t.path);
          await settle(t.path);
        }
        continue;
      }
      if (dir !== undefined) {
        if (!replacedConflicts.has(dir)) {
          replacedConflicts.add(dir);
          const idx = (await replica.get(dir))!;
          const server: Entry = { path: dir, type: EntryType.DIR, size: 0, mode: idx.mode & 0o777, mtimeMs: idx.mtimeMs, hash: new Uint8Array(0), target: '', version: idx.version };
          // client-wins (or newest, ours newer): ours stays, and the next push sends it under the same policy.
          const localWins = policy === 'client-wins' || keptHere.has(dir);
          _conflict(result, onEvent, undefined, server, 'type-change', await localStateOf(root, dir, idx), localWins ? { resolvedBy: policy } : undefined);
        }
        blocked.add(dir);
        continue;
      }
    }
    let idx = await replica.get(t.path);
    const parentAbsent = absentDirs.has(parentOf(t.path));
    if ((onDemand && t.type === EntryType.FILE && (!idx || idx.remote)) || idx?.remote) {
      // Content not here, by design: while nothing sits at the path, only the namespace moves.
      const nothingHere = (parentAbsent && (!idx || idx.remote)) || !parentsAreDirs(t.path) || !lstatSync(join(root, t.path), { throwIfNoEntry: false });
      if (nothingHere) {
        // (An addition inside a directory removed here meets that removal as in a full replica; indexed as remote, it
        // passed unseen, pull exiting 0, until the push met the conflict.)
        if (t.type !== EntryType.NONE && !idx && await waitsInRemoved(t)) continue;
        const local: LocalState = { kind: 'absent' };
        // (.imzignore comes whole: without it here, this replica would push what the tree excludes.)
        if (t.type === EntryType.FILE && onDemand && !opts.fetch?.has(t.path) && t.path !== IGNORE_FILE) plans.push({ kind: 'remote', t, local });
        else if (t.type === EntryType.NONE) plans.push({ kind: idx?.remote ? 'remote' : 'index', t, local });
        else plans.push({ kind: t.type === EntryType.DIR ? 'mkdir' : t.type === EntryType.SYMLINK ? 'symlink' : 'file', t, local });
        if (t.type === EntryType.DIR) absentDirs.add(t.path);
        continue;
      }
      // Something was made at a path whose content we never had: compare it with the server's facts.
      if (idx?.remote) idx = { ...idx, ctimeMs: -1, ino: -1 };
    }
    const local: LocalState = parentAbsent && !idx ? { kind: 'absent' }
      : !parentsAreDirs(t.path) ? { kind: idx ? 'deleted' : 'absent' }
      : await localStateOf(root, t.path, idx);
    if (local.kind === 'absent' && t.type !== EntryType.NONE && await waitsInRemoved(t)) continue;
    if (local.kind === 'absent' && t.type === EntryType.DIR) absentDirs.add(t.path);
    if (local.kind === 'unsupported') {
      _conflict(result, onEvent, conflictFetch, t, 'type-change', local);
      continue;
    }
    if (await _equivalent(root, local, idx, t)) {
      // A symlink has no mode of its own here: chmod would follow it, maybe out of the replica.
      const hasMode = t.type === EntryType.FILE || t.type === EntryType.DIR;
      // A chmod made here and not pushed yet (the content is the server's): it stays a change to push, the index
      // taking the server's mode; indexing the mode on disk made the next push find nothing to send.
      // (A file made here with the server's content and another mode: the same, its mode a change to push.)
      const localMode = hasMode && local.fs !== undefined && local.fs.mode !== t.mode &&
        ((local.kind === 'modified' && idx !== undefined && local.fs.mode !== idx.mode) || (local.kind === 'created' && t.type === EntryType.FILE));
      // Otherwise what the server holds is taken, its mode too (a local touch does not keep a server's chmod out).
      const needsMeta = hasMode && !localMode && local.kind !== 'created' && local.fs !== undefined &&
        (local.fs.mode !== t.mode || (t.type === EntryType.FILE && local.kind !== 'modified' && !sameMtime(local.fs.mtimeMs, t.mtimeMs)));
      plans.push(needsMeta ? { kind: 'meta', t, local } : { kind: 'index', t, local, localMode });
      continue;
    }
    if (local.kind === 'modified' && idx && idx.type === EntryType.FILE && t.type === EntryType.FILE && local.fs?.type === EntryType.FILE && toHex(t.hash) === idx.hash) {
      // The server changed only metadata and we changed content: both apply,
      // no conflict. The index keeps the old content's facts, so the local
      // content is still seen as a change to push.
      chmodSync(join(root, t.path), t.mode & 0o777);
      await replica.set(t.path, { ...idx, version: t.version, mode: t.mode });
      result.changed++;
      onEvent?.({ type: 'change', path: t.path, action: 'meta' });
      continue;
    }
    if (local.kind === 'modified' && idx?.type === EntryType.FILE && t.type === EntryType.FILE && local.fs?.type === EntryType.FILE && local.hash === idx.hash && local.fs.mode !== idx.mode) {
      // We changed only the mode, the server the content: both apply, no conflict (as at a push: meta/update). The
      // server's content comes with our mode, indexed with the server's, so that our chmod is still a change to push.
      plans.push({ kind: 'file', t, local, keepMode: local.fs.mode });
      continue;
    }
    if (local.kind === 'deleted' && idx && !idx.remote && t.version === idx.version && sameState(idx, t)) {
      // Removed here from the very version the server holds (this replica's own push, read back; a resync): a
      // removal to push, not a conflict.
      continue;
    }
    if (local.kind === 'modified' || local.kind === 'deleted' || local.kind === 'created') {
      const cls = _classify(local, t);
      const localWins = policy === 'client-wins' || (policy === 'newest' && local.fs !== undefined && local.fs.mtimeMs > t.mtimeMs);
      const asideName = policy === 'keep-both' ? keepName : conflictCopyName;
      if (policy !== 'manual' && !localWins && local.fs && local.fs.type !== EntryType.DIR && t.type !== EntryType.NONE) {
        // The policy gives the path to the server's version: ours moves aside
        // (a conflict copy, never pushed; under keep-both a name that is).
        const aside = freeName(root, asideName(t.path, replica.config.replicaId, t.version));
        renameSync(join(root, t.path), join(root, aside));
        _conflict(result, onEvent, undefined, t, cls, local, { localCopy: aside, resolvedBy: policy });
        await replica.delete(t.path);
        const moved: LocalState = { kind: 'absent' };
        plans.push({ kind: t.type === EntryType.DIR ? 'mkdir' : t.type === EntryType.SYMLINK ? 'symlink' : 'file', t, local: moved });
        continue;
      }
      if (policy !== 'manual' && !localWins && local.kind === 'deleted' && (t.type === EntryType.FILE || t.type === EntryType.SYMLINK)) {
        // Our removal loses to the server's change: its version comes back, nothing of ours to keep (it was left
        // for a person, as under manual, until the push of a sync settled it).
        _conflict(result, onEvent, undefined, t, cls, local, { resolvedBy: policy });
        plans.push({ kind: t.type === EntryType.SYMLINK ? 'symlink' : 'file', t, local: { kind: 'absent' } });
        continue;
      }
      // Under client-wins (or newest, ours newer) ours stays: the next push sends it under the same policy.
      _conflict(result, onEvent, localWins ? undefined : conflictFetch, t, cls, local, localWins ? { resolvedBy: policy } : undefined);
      if (local.fs && local.fs.type !== EntryType.DIR) blocked.add(t.path);
      continue;
    }
    if (t.type === EntryType.NONE) plans.push({ kind: 'remove', t, local });
    else if (t.type === EntryType.DIR) plans.push({ kind: 'mkdir', t, local });
    else if (t.type === EntryType.SYMLINK) plans.push({ kind: 'symlink', t, local });
    else plans.push({ kind: 'file', t, local });
  }

  const safeDirs = new Set<string>(['']);
  const ensureParents = (p: string) => _ensureParents(root, p, safeDirs);
  // seen: the facts read before the local content was compared with the server's (an 'index' plan). Read again here,
  // they could be a write made since, indexed as the server's content and never pushed.
  const indexFrom = async (t: Entry, serverMode = false, seen?: FsEntry) => {
    let fs = seen;
    if (!fs) {
      fs = fsEntryFromStats(t.path, lstatSync(join(root, t.path)), t.type === EntryType.SYMLINK ? t.target : '') as FsEntry;
      // A file placed or touched by this pull carries the server's size and mtime.
      if (t.type === EntryType.FILE) fs = placedFacts(fs, t);
    }
    const e = _indexEntry(t, fs);
    if (serverMode) e.mode = t.mode;
    // On demand, fetched content is remembered with its time, for least-recently-fetched eviction.
    // (Never .imzignore: evicted, its rules would stop applying here.)
    if (onDemand && t.type === EntryType.FILE && t.path !== IGNORE_FILE) e.fetchedMs = Date.now();
    await replica.set(t.path, e);
  };

  // 1. Removals, deepest first, so directories are empty when their turn comes.
  const removals = plans.filter((p) => p.kind === 'remove' || ((p.kind === 'mkdir' || p.kind === 'file' || p.kind === 'symlink') && p.local.fs && p.local.fs.type !== p.t.type && p.local.fs.type === EntryType.DIR));
  removals.sort((a, b) => depthOf(b.t.path) - depthOf(a.t.path));
  const dirsTouched = new Set<string>();
  for (const p of removals) {
    const abs = join(root, p.t.path);
    ensureParents(p.t.path);
    try {
      if (p.local.fs?.type === EntryType.DIR) {
        rmdirSync(abs);
        // No longer a directory: what is made at this name later is checked again before anything goes under it.
        safeDirs.delete(p.t.path);
      } else if (p.local.fs) unlinkSync(abs);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') {
        // The server removed a directory to which this replica added files.
        _conflict(result, onEvent, conflictFetch, p.t, 'dir-removed', p.local);
        p.kind = 'index';
        (p as { skip?: boolean }).skip = true;
        continue;
      }
      if (code !== 'ENOENT') throw err;
    }
    dirsTouched.add(parentOf(p.t.path));
    if (p.kind === 'remove') {
      await replica.delete(p.t.path);
      await settle(p.t.path);
      result.changed++;
      onEvent?.({ type: 'change', path: p.t.path, action: p.local.fs?.type === EntryType.DIR ? 'rmdir' : 'remove' });
    } else {
      p.local = { kind: 'absent' };
    }
  }

  // What steps 2, 3 and 5 put in the tree, listed first: a run killed before the index is written leaves it for the
  // next to index (Replica.sweepTemps), not untracked.
  const placing = plans.filter((p) => (p.kind === 'mkdir' || p.kind === 'symlink' || p.kind === 'file') && !(p as { skip?: boolean }).skip);
  if (placing.length > 0) {
    replica.notePlacing(placing.map(({ t }) => ({ path: t.path, type: t.type, version: t.version, hash: t.type === EntryType.FILE ? toHex(t.hash) : '', size: t.size, target: t.target, mode: t.mode })));
  }

  // 2. Directories, shallowest first.
  const mkdirs = plans.filter((p) => p.kind === 'mkdir' && !(p as { skip?: boolean }).skip).sort((a, b) => depthOf(a.t.path) - depthOf(b.t.path));
  for (const p of mkdirs) {
    ensureParents(p.t.path);
    const abs = join(root, p.t.path);
    if (p.local.fs && p.local.fs.type !== EntryType.DIR) unlinkSync(abs);
    try {
      mkdirSync(abs, p.t.mode & 0o777);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    chmodSync(abs, p.t.mode & 0o777);
    safeDirs.add(p.t.path);
    dirsTouched.add(parentOf(p.t.path));
    await indexFrom(p.t);
    result.changed++;
    onEvent?.({ type: 'change', path: p.t.path, action: 'mkdir' });
  }

  // 3. Symlinks: made under a temp name, then renamed over whatever was there.
  for (const p of plans) {
    if (p.kind !== 'symlink' || (p as { skip?: boolean }).skip) continue;
    ensureParents(p.t.path);
    const abs = join(root, p.t.path);
    const tmp = tempNameFor(abs);
    symlinkSync(p.t.target, tmp);
    renameSync(tmp, abs);
    safeDirs.delete(p.t.path);
    dirsTouched.add(parentOf(p.t.path));
    await indexFrom(p.t);
    result.changed++;
    onEvent?.({ type: 'change', path: p.t.path, action: 'symlink' });
  }

  // 4. Metadata-only changes and index-only updates.
  for (const p of plans) {
    if (p.kind === 'meta') {
      const abs = join(root, p.t.path);
      const writtenSince = p.t.type === EntryType.FILE && !_sameFs(fsEntryAt(root, p.t.path), p.local.fs);
      // (Synchronous calls, as for the rest of the tree: awaited, each was a turn of the thread pool, and a pull of
      // 10,000 chmods spent half its time waiting on them.)
      chmodSync(abs, p.t.mode & 0o777);
      if (writtenSince) {
        // A file written since it was compared: the server's mode applies, but not its mtime, which would make that
        // write read as the server's content. Indexed as the server's version with facts that never match, the
        // write is hashed at the next scan and goes up against that version, as a content change here meeting a
        // chmod there does.
        await replica.set(p.t.path, _indexEntry(p.t, { ...p.local.fs!, mode: p.t.mode, ctimeMs: 0 }));
      } else {
        if (p.t.type === EntryType.FILE) utimesSync(abs, utimeSeconds(p.t.mtimeMs), utimeSeconds(p.t.mtimeMs));
        await indexFrom(p.t);
      }
      result.changed++;
      onEvent?.({ type: 'change', path: p.t.path, action: 'meta' });
    } else if (p.kind === 'remote') {
      // Namespace only: a file whose content stays on the server (or its removal there).
      if (p.t.type === EntryType.NONE) await replica.delete(p.t.path);
      else await replica.set(p.t.path, remoteEntry(p.t));
      await settle(p.t.path);
      result.changed++;
      onEvent?.({ type: 'change', path: p.t.path, action: p.t.type === EntryType.NONE ? 'remove' : 'remote', entry: p.t, wasRemote: true });
    } else if (p.kind === 'index' && !(p as { skip?: boolean }).skip) {
      if (p.t.type === EntryType.NONE) await replica.delete(p.t.path);
      else await indexFrom(p.t, p.localMode, p.local.fs);
      await settle(p.t.path);
    }
  }

  // 5. File contents: fetch, verify, fsync in batches, rename into place.
  const fileItems: FetchItem[] = [];
  const planByDest = new Map<string, _Plan>();
  for (const p of plans) {
    if (p.kind !== 'file' || (p as { skip?: boolean }).skip) continue;
    ensureParents(p.t.path);
    const dest = join(root, p.t.path);
    fileItems.push({ entry: p.t, dest });
    planByDest.set(dest, p);
  }
  const blobDir = join(replica.stateDir, 'conflicts', 'blobs');
  for (const { t } of conflictFetch) fileItems.push({ entry: t, dest: join(replica.stateDir, blobPath(toHex(t.hash))) });
  const renamedIn = new Set<string>();
  if (fileItems.length > 0) {
    await mkdir(blobDir, { recursive: true });
    const totalBytes = fileItems.reduce((n, i) => n + i.entry.size, 0);
    await replica.noteTempDirs([...tempDirsOf(fileItems)].map((d) => d.slice(root.length + 1)));
    const { stale } = await fetchFiles(remote, fileItems, async (batch) => {
      for (const { item, tmp } of batch) {
        const p = planByDest.get(item.dest);
        if (!p) {
          renameSync(tmp, item.dest); // a conflict's server version, content-addressed
          renamedIn.add(dirname(item.dest));
          continue;
        }
        // The user may have written the file since we looked: never overwrite that.
        if (!_sameFs(fsEntryAt(root, p.t.path), p.local.fs)) {
          const now = await localStateOf(root, p.t.path, await replica.get(p.t.path));
          // Keep the server's version beside the conflict record instead.
          const c = _conflict(result, onEvent, undefined, p.t, _classify(now, p.t), now);
          renameSync(tmp, join(replica.stateDir, c.serverBlob!));
          renamedIn.add(blobDir);
          continue;
        }
        if (p.local.fs?.type === EntryType.DIR) rmdirSync(item.dest);
        const keepMode = p.kind === 'file' ? p.keepMode : undefined;
        if (keepMode !== undefined) await chmod(tmp, keepMode & 0o777);
        renameSync(tmp, item.dest);
        renamedIn.add(dirname(item.dest));
        await indexFrom(p.t, keepMode !== undefined);
        await settle(p.t.path);
        result.changed++;
        result.files++;
        result.bytes += p.t.size;
        onEvent?.({ type: 'change', path: p.t.path, action: p.local.fs ? 'update' : 'create' });
      }
    }, { onProgress: (pr: FetchProgress) => onEvent?.({ type: 'progress', files: pr.files, bytes: pr.bytes, totalFiles: fileItems.length, totalBytes }) });
    for (const s of stale) if (planByDest.has(s.dest)) result.stale.push(s.entry.path);
    // A conflict whose server version could not be fetched (it kept changing there) names no blob that is not here;
    // the path is owed, and the pull that fetches it meets the local change again, keeping the server's version then.
    if (stale.length > 0) {
      for (const { t, c } of conflictFetch) {
        if (c.serverBlob && !existsSync(join(replica.stateDir, c.serverBlob))) {
          delete c.serverBlob;
          result.stale.push(t.path);
        }
      }
    }
  }
  // One fsync per directory touched, once all renames are done, before the index moves.
  for (const d of dirsTouched) renamedIn.add(join(root, d));
  // A few (a followed change): synchronously; many (a clone): in parallel.
  if (renamedIn.size <= 4) for (const d of renamedIn) fsyncDirSync(d);
  else await inParallel([...renamedIn], 32, fsyncDir);
  for (const c of result.conflicts) if (!c.takingWhole) await saveConflict(replica.stateDir, c);
  await replica.flushIndex();
  // A directory taken whole is done once what it holds is indexed: until then its record has the next run take it again.
  for (const c of takenWhole) {
    delete c.takingWhole;
    await saveConflict(replica.stateDir, c);
  }
  await replica.clearTempDirs();
  if (placing.length > 0) replica.clearPlacing();
  return result;
}

/** What _takeReplacedDirs needs of reconcile's walk. */
interface _ReplacedCtx {
  /** The topmost tracked directory above path made something else here, if any. */
  replacedAbove: (path: string) => Promise<string | undefined>;
  /** Called after a directory moved aside: what was known of the tree's directories no longer holds. */
  moved: () => void;
  conflict: (server: Entry, local: LocalState, settled: Partial<ConflictRecord>) => ConflictRecord;
  /** Out: the directories whose replacement here stays (newest, ours newer). */
  keptHere: Set<string>;
  /** Out: the records of the directories taken whole (done once what they hold is indexed). */
  takenWhole: ConflictRecord[];
  /** The conflict records as the run began. */
  records: ConflictRecord[];
  /** True when every parent of path is a real directory here. */
  parentsAreDirs: (path: string) => boolean;
  /** path itself, when it is a tracked directory made something else here (its parents real directories). */
  replacedAt: (path: string) => Promise<string | undefined>;
}

// Tracked directories made something else here (a link, a file), inside which the server changed things: under
// server-wins, keep-both, or newest with the server's change the newer, ours moves aside (a conflict copy; under
// keep-both a name that is pushed) and the server's directory comes whole, as resolve --take server brings it: what
// it holds replaces this pull's targets under it. Returns the targets to reconcile.
async function _takeReplacedDirs(replica: Replica, remote: Remote, targets: Entry[], policy: string, ctx: _ReplacedCtx): Promise<Entry[]> {
  // Directories a killed run began to take: taken again first, whatever the policy now (ours went aside, or goes now).
  const records = ctx.records;
  const pending = new Map<string, ConflictRecord>();
  for (const c of records) if (c.takingWhole === true && c.class === 'type-change') pending.set(c.path, c);
  const newestUnder = new Map<string, number>();
  if (policy !== 'manual' && policy !== 'client-wins') {
    for (const t of targets) {
      // (A removal there meets nothing here: the same result, dropped from the index by the walk, no take.)
      if (t.type === EntryType.NONE) continue;
      // A change of the directory itself (a chmod there) is one inside it: left to the walk, the take brought the
      // directory empty, and what this replica tracked in it read as removed here.
      const dir = (await ctx.replacedAbove(t.path)) ?? (t.type === EntryType.DIR ? await ctx.replacedAt(t.path) : undefined);
      if (dir !== undefined) newestUnder.set(dir, Math.max(newestUnder.get(dir) ?? 0, t.mtimeMs));
    }
  }
  if (newestUnder.size === 0 && pending.size === 0) return targets;
  const taken: string[] = [];
  const added: Entry[] = [];
  for (const dir of new Set([...pending.keys(), ...newestUnder.keys()])) {
    const again = pending.get(dir);
    if (again && !ctx.parentsAreDirs(dir)) {
      // A parent made something else since (a link, maybe out of the replica): nothing is looked at or moved through
      // it. The take is dropped; that parent's own conflict brings the server's tree, this directory with it.
      delete again.takingWhole;
      await saveConflict(replica.stateDir, again);
      continue;
    }
    let local: LocalState | undefined;
    if (!again) {
      local = await localStateOf(replica.root, dir, (await replica.get(dir))!);
      if (!local.fs) continue;
    }
    const listing: Entry[] = [];
    for await (const b of remote.list(dir)) {
      for (const e of b.entries) {
        if (e.path !== dir && !e.path.startsWith(`${dir}/`)) continue;
        _checkEntry(e);
        listing.push(e);
      }
    }
    // newest: ours against everything the server's directory holds, itself too, as a push weighs it there.
    if (!again && policy === 'newest' && local!.fs!.mtimeMs > listing.reduce((m, e) => Math.max(m, e.mtimeMs), newestUnder.get(dir)!)) {
      ctx.keptHere.add(dir);
      continue;
    }
    const server = listing.find((e) => e.path === dir);
    if (server?.type !== EntryType.DIR) {
      // The server no longer has it as a directory: nothing to take (the main walk meets what it has as it comes).
      if (again) {
        delete again.takingWhole;
        await saveConflict(replica.stateDir, again);
      }
      continue;
    }
    // Ours still at the path (a first take, or a killed one that had not moved it yet) goes aside.
    const abs = join(replica.root, dir);
    const here = lstatSync(abs, { throwIfNoEntry: false });
    const oursHere = here !== undefined && !here.isDirectory();
    const how = again?.resolvedBy ?? policy;
    const aside = oursHere ? freeName(replica.root, (how === 'keep-both' ? keepName : conflictCopyName)(dir, replica.config.replicaId, server.version)) : again?.localCopy;
    const rec = again ?? ctx.conflict(server, local!, { localCopy: aside, resolvedBy: policy });
    if (aside !== undefined) rec.localCopy = aside;
    // Said durably before anything moves: a run killed from here on leaves the record that has the next one take the
    // directory again. The index forgets what it tracked under it first, so that nothing of it reads as removed here
    // (a kill then left the server's unchanged files looking deleted, and the next push removed them there).
    rec.takingWhole = true;
    await saveConflict(replica.stateDir, rec);
    await replica.forgetInside(dir);
    await replica.delete(dir);
    await replica.flushIndex();
    if (oursHere) {
      renameSync(abs, join(replica.root, aside!));
      ctx.moved();
    }
    // What waited for a person under it (a removal there that met an addition) is settled with it.
    for (const c of records) if (!c.resolvedBy && c.path.startsWith(`${dir}/`)) await clearConflict(replica.stateDir, c.path);
    ctx.takenWhole.push(rec);
    taken.push(dir);
    added.push(...listing.sort((a, b) => depthOf(a.path) - depthOf(b.path)));
  }
  if (taken.length === 0) return targets;
  const gone = new Set(taken);
  const under = (p: string) => {
    for (let d = p; d !== ''; d = parentOf(d)) if (gone.has(d)) return true;
    return false;
  };
  return [...targets.filter((t) => !under(t.path)), ...added];
}

function _conflict(result: ReconcileResult, onEvent: ((e: ReconcileEvent) => void) | undefined, fetchList: { t: Entry; c: ConflictRecord }[] | undefined, t: Entry, cls: ConflictClass, local: LocalState, settled?: Partial<ConflictRecord>): ConflictRecord {
  const c: ConflictRecord = {
    path: t.path, class: cls, at: 'pull',
    local: local.fs ? _side(local.fs, local.hash) : null,
    server: t.type === EntryType.NONE ? null : sideOfEntry(t),
    detected: new Date().toISOString(),
  };
  if (t.type === EntryType.FILE) {
    c.serverBlob = blobPath(toHex(t.hash));
    fetchList?.push({ t, c });
  }
  if (settled) {
    // A policy settled it: the server's version is not kept as a blob (it goes to the path, or ours stays).
    delete c.serverBlob;
    Object.assign(c, settled);
  }
  result.conflicts.push(c);
  onEvent?.({ type: 'conflict', conflict: c });
  return c;
}

function _side(fs: FsEntry, hash?: string): ConflictSide {
  return { type: fs.type, hash, size: fs.size, mode: fs.mode, mtimeMs: fs.mtimeMs, target: fs.target || undefined };
}

function _classify(local: LocalState, t: Entry): ConflictClass {
  if (local.kind === 'deleted') return 'remove/update';
  if (t.type === EntryType.NONE) return 'update/remove';
  if (local.fs && local.fs.type !== t.type) return 'type-change';
  if (local.kind === 'created') return 'create/create';
  return 'update/update';
}

// True when the local path already holds what the server has (identical
// results on both sides are not conflicts).
async function _equivalent(root: string, local: LocalState, idx: IndexEntry | undefined, t: Entry): Promise<boolean> {
  if (t.type === EntryType.NONE) return !local.fs;
  const fs = local.fs;
  if (!fs || fs.type !== t.type) return false;
  if (t.type === EntryType.DIR) return true;
  if (t.type === EntryType.SYMLINK) return fs.target === t.target;
  if (fs.size !== t.size) return false;
  let hash = local.hash;
  if (!hash && local.kind === 'clean' && idx) hash = idx.hash;
  if (!hash) {
    hash = toHex(await hashFile(join(root, t.path)));
    local.hash = hash;
  }
  return hash === toHex(t.hash);
}

/** True when an index entry records what a server entry holds (type, and content or link target). */
export function sameState(idx: IndexEntry, t: Entry): boolean {
  if (idx.type !== t.type) return false;
  if (t.type === EntryType.FILE) return idx.hash === toHex(t.hash);
  return t.type !== EntryType.SYMLINK || idx.target === t.target;
}

function _sameFs(a: FsEntry | undefined, b: FsEntry | undefined): boolean {
  if (!a || !b) return !a && !b;
  return a.type === b.type && a.size === b.size && sameMtime(a.mtimeMs, b.mtimeMs) && sameMtime(a.ctimeMs, b.ctimeMs) && a.ino === b.ino && a.target === b.target;
}

/** The index entry of a file whose content is not here: the server's facts, flagged remote. */
export function remoteEntry(t: Entry): IndexEntry {
  return { type: EntryType.FILE, version: t.version, hash: toHex(t.hash), size: t.size, mode: t.mode, mtimeMs: t.mtimeMs, ctimeMs: 0, ino: 0, target: '', remote: true };
}

function _indexEntry(t: Entry, fs: FsEntry): IndexEntry {
  return {
    type: t.type, version: t.version, hash: t.type === EntryType.FILE ? toHex(t.hash) : '', size: fs.size, mode: fs.mode, mtimeMs: fs.mtimeMs,
    ctimeMs: fs.ctimeMs, ino: fs.ino, target: fs.target,
  };
}

/** Largest link target accepted from the wire, in bytes (Linux PATH_MAX). */
const MAX_TARGET_BYTES = 4095;

// Checks the facts of one server entry before any of them reaches the disk:
// a safe path, a known type, numbers that are whole and in range (a forged
// size must not drive an allocation or an endless fetch), a SHA-256 for a
// file, and a link target that the file system can hold.
function _checkEntry(t: Entry): void {
  checkPath(t.path, 'apply server change');
  const bad = (what: string) => new ImzError(Codes.PROTOCOL, `cannot apply server change: the server sent ${what} for ${JSON.stringify(t.path)}`);
  const whole = (n: number) => Number.isSafeInteger(n) && n >= 0;
  if (t.type !== EntryType.NONE && t.type !== EntryType.FILE && t.type !== EntryType.DIR && t.type !== EntryType.SYMLINK) throw bad(`an unknown entry type (${String(t.type)})`);
  if (!whole(t.version)) throw bad(`an invalid version (${t.version})`);
  if (t.type === EntryType.NONE) return;
  if (!Number.isFinite(t.mtimeMs)) throw bad(`an invalid modification time (${t.mtimeMs})`);
  if (t.type === EntryType.FILE) {
    if (!whole(t.size)) throw bad(`an invalid size (${t.size})`);
    if (t.hash.length !== 32) throw bad(`a ${t.hash.length}-byte content hash instead of a SHA-256`);
  }
  if (t.type === EntryType.SYMLINK && (t.target === '' || t.target.includes('\0') || Buffer.byteLength(t.target) > MAX_TARGET_BYTES)) {
    throw bad('a link target that cannot be stored (empty, with NUL, or too long)');
  }
}

// A server's state never holds something under a file or a symlink: such a
// batch can only be forged, to make a write go through a link it also sends.
function _checkNesting(targets: Entry[]): void {
  const leaves = new Map<string, number>();
  for (const t of targets) if (t.type === EntryType.FILE || t.type === EntryType.SYMLINK) leaves.set(t.path, t.type);
  if (leaves.size === 0) return;
  for (const t of targets) {
    if (t.type === EntryType.NONE) continue;
    for (let i = t.path.indexOf('/'); i > 0; i = t.path.indexOf('/', i + 1)) {
      const kind = leaves.get(t.path.slice(0, i));
      if (kind !== undefined) {
        throw new ImzError(Codes.BAD_PATH, `cannot apply server change: ${t.path} lies under ${t.path.slice(0, i)}, which the server sends as a ${kind === EntryType.SYMLINK ? 'symlink' : 'file'}; imz never writes through it`);
      }
    }
  }
}

// True when abs is a real directory or does not exist (then nothing lies under it either).
function _dirOrAbsent(abs: string): boolean {
  try {
    return lstatSync(abs).isDirectory();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return true;
    throw err;
  }
}

// Makes sure every parent of p inside the replica is a real directory (never
// a symlink), creating missing ones; confinement against a hostile server.
function _ensureParents(root: string, p: string, safe: Set<string>): void {
  const parts = p.split('/');
  let cur = '';
  for (let i = 0; i < parts.length - 1; i++) {
    cur = cur === '' ? parts[i]! : `${cur}/${parts[i]}`;
    if (safe.has(cur)) continue;
    const abs = join(root, cur);
    let st;
    try {
      st = lstatSync(abs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      mkdirSync(abs, 0o755);
      st = lstatSync(abs);
    }
    if (!st.isDirectory()) {
      throw new ImzError(Codes.BAD_PATH, `cannot write ${p}: ${cur} in the replica is not a directory (it is ${st.isSymbolicLink() ? 'a symlink' : 'a file'}); imz never writes through it`);
    }
    safe.add(cur);
  }
}

