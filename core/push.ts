import { lstatSync } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { type Entry, EntryType, type Envelope, Op, type Operation, OpKind, type OpResult, OpStatus } from '../protocol/messages.ts';
import { type ChangeScan, type ChangeStream, type LocalChange, orderChanges, scanChanges } from './changes.ts';
import { type ConflictRecord, blobPath, clearConflict, conflictCopyName, freeName, listConflicts, outstanding, saveConflict, sideOfEntry } from './conflicts.ts';
import { fromHex, toHex } from './hash.ts';
import { checkPath, inDir, parentOf } from './paths.ts';
import { ReintLog } from './reint_log.ts';
import type { ScanCache } from './scan_cache.ts';
import type { IndexEntry } from './index_model.ts';
import type { LogRecord, LoggedOp } from './reint_log_model.ts';
import { type SecurityOptions, connectReplica } from './credentials.ts';
import type { Remote } from './remote.ts';
import type { BlobItem, Prestager } from './uploader.ts';
import { Replica } from './replica.ts';
import { explainFsError, sweepStateTemps } from './atomic_fs.ts';
import { type Policy, checkPolicy } from './policy.ts';
import { placedFacts } from './local_state.ts';
import { parentsAreDirs } from './replica_cache.ts';
import { fsEntryAt, sameMtime, statEntrySync } from './tree_scan.ts';

/** Options of push. */
export interface PushOptions {
  policy?: string;
  /** Token and TLS settings from the command line (over those saved at clone). */
  security?: SecurityOptions;
  allowMassDelete?: boolean;
  onEvent?: (e: PushEvent) => void;
}

/** What push reports as it goes. */
export type PushEvent =
  | { type: 'op'; path: string; kind: string; status: 'applied' | 'duplicate' | 'same' | 'conflict' | 'rejected' | 'held' | 'aside'; message?: string }
  | { type: 'conflict'; conflict: ConflictRecord }
  | { type: 'displaced'; path: string; displaced: string }
  | { type: 'upload'; bytes: number; total: number };

/** What a push did. */
export interface PushSummary {
  logged: number;
  applied: number;
  /** Conflicts left for a person (manual policy). */
  conflicts: ConflictRecord[];
  /** Conflicts a policy settled (the losing version kept and listed). */
  settled: ConflictRecord[];
  rejected: number;
  offline: boolean;
  uploadedBytes: number;
  /** Operations sent while the scan went on (nothing tracked was gone). */
  streamed: number;
  /** Local changes kept back, under a directory whose dir-removed conflict waits for a person (imz resolve). */
  held: number;
  /** Operations an interrupted push had sent, sent again first (not counted in logged). */
  resent: number;
  /** Directories an interrupted pull is still taking whole from the server: changes there wait for the next pull. */
  taking?: string[];
}

const KIND_NAMES: Record<number, string> = { 1: 'store', 2: 'mkdir', 3: 'symlink', 4: 'remove', 5: 'rmdir', 6: 'setattr', 7: 'move' };

/**
 * Reintegrates local changes: scans the replica against its index, logs the
 * operations (durably, in .imz/log), uploads missing content by hash, sends
 * the operations in order, and settles each answer (index update, or the
 * conflict policy). Operations sent before an interruption are resent first
 * with their original ids, so the server applies each exactly once. With the
 * server unreachable the operations stay logged and IMZ_UNREACHABLE is thrown.
 */
export async function push(dir: string, opts: PushOptions = {}): Promise<PushSummary> {
  // A full disk or a refused write becomes one line that says where and what to do.
  return _push(dir, opts).catch((err) => {
    throw explainFsError(err, 'push', dir);
  });
}

async function _push(dir: string, opts: PushOptions = {}): Promise<PushSummary> {
  const replica = await Replica.open(dir);
  await replica.lock();
  // Connecting runs alongside the scan's loading (~8 ms less on a push of a
  // few files); the tree is looked at once the server has answered.
  const link = _connect(replica, opts.security);
  try {
    await replica.sweepTemps();
    try {
      return await _pushWith(replica, link, opts);
    } catch (err) {
      // The server went away mid-push: what was logged stays logged, and the next push resends it.
      if (err instanceof ImzError && err.code === Codes.CLOSED) {
        const left = (await ReintLog.open(replica.stateDir)).pending();
        throw new ImzError(Codes.UNREACHABLE, `cannot push: the connection to ${replica.config.remote} was lost (${err.message}); ${left.sent.length + left.unsent.length} changes stay logged (push again when it is back)`);
      }
      throw err;
    }
  } finally {
    (await link.catch(() => undefined))?.remote?.close();
    await replica.unlock();
  }
}

/** A connection once it has answered: the remote, or why there is none (offline). */
interface _Link {
  remote?: Remote;
  unreachable?: ImzError;
}

// Connects; an unreachable server is an answer (offline: the push logs and keeps its changes), any other failure throws.
function _connect(replica: Replica, security: SecurityOptions | undefined): Promise<_Link> {
  // (async: a token file that cannot be read, thrown at once, becomes a failure to await like any other)
  const link = (async () => connectReplica(replica, security, { timeoutMs: 5000 }))().then((remote): _Link => ({ remote }), (err): _Link => {
    if (!(err instanceof ImzError) || err.code !== Codes.UNREACHABLE) throw err;
    return { unreachable: err };
  });
  link.catch(() => undefined); // awaited by the push; a failure meanwhile must not count as unhandled
  return link;
}

/** Push over an open, locked replica (sync reuses it); remote undefined means offline. */
export async function pushWith(replica: Replica, remote: Remote | undefined, opts: PushOptions = {}, unreachable?: ImzError): Promise<PushSummary> {
  return _pushWith(replica, Promise.resolve({ remote, unreachable }), opts);
}

async function _pushWith(replica: Replica, link: Promise<_Link>, opts: PushOptions = {}): Promise<PushSummary> {
  // A full disk or a refused write becomes one line that says where and what to do.
  return _pushLinked(replica, link, opts).catch((err) => {
    throw explainFsError(err, 'push', replica.root);
  });
}

// The server must be the replica's and take writes; undefined when offline.
async function _writable(replica: Replica, link: Promise<_Link>): Promise<Remote | undefined> {
  const { remote } = await link;
  if (remote && remote.info.serverId !== replica.head.serverId) {
    throw new ImzError(Codes.IDENTITY, `cannot push: the server at ${remote.address} is not the one this replica follows; run \`imz pull --resync\` first`);
  }
  if (remote && remote.info.access !== 'read-write') {
    throw new ImzError(Codes.READ_ONLY, remote.info.upstream
      ? `cannot push: ${remote.address} is a read-only mirror of ${remote.info.upstream.address}; local changes stay as they are (push to a server that takes writes)`
      : `cannot push: the token gives read-only access to ${remote.address}; local changes stay as they are (push with a read-write token)`);
  }
  return remote;
}

async function _pushLinked(replica: Replica, link: Promise<_Link>, opts: PushOptions = {}): Promise<PushSummary> {
  // State files a killed run was writing (Replica.sweepTemps covers only the tree's fetch dirs).
  sweepStateTemps(['', 'index', 'conflicts', 'conflicts/blobs'].map((d) => join(replica.stateDir, d)));
  const policy = checkPolicy(opts.policy ?? replica.config.policy ?? 'manual');
  const log = await ReintLog.open(replica.stateDir);
  // Operations are numbered above the highest the server applied from this replica id, whatever .imz/opseq says: lost,
  // damaged or restored from a backup (or the replica copied whole), it numbered new operations the server took for
  // ones it had applied, and they were dropped as duplicates, the push saying all was well.
  const writable = _writable(replica, link).then((remote) => {
    if (remote) log.numberAbove(remote.info.originSeq);
    return remote;
  });
  writable.catch(() => undefined); // awaited below, before anything is logged
  const summary: PushSummary = { logged: 0, applied: 0, conflicts: [], settled: [], rejected: 0, offline: false, uploadedBytes: 0, streamed: 0, held: 0, resent: 0 };

  // 1. Operations that may have reached the server before an interruption: resend as they are.
  const { sent } = log.pending();
  if (sent.length > 0) {
    const remote = await writable;
    if (remote) {
      // Their contents were made sure of before they were sent, but maybe under another policy (a chmod carries its
      // content only under client-wins or newest), or swept from the server's staging since: asked for again, and
      // sent if the server lacks them and the file still holds them.
      const carried = sent.filter((o) => _carriesContent(o, policy));
      if (carried.length > 0) {
        summary.uploadedBytes += await (await import('./uploader.ts')).uploadBlobs(remote, carried.map((o) => _blobItem(replica, o)));
      }
      await _send(replica, remote, log, sent, policy, summary, opts, new Map());
      summary.resent = sent.length;
    }
  }

  // 2. A fresh scan supersedes operations that were logged but never sent.
  // A directory whose dir-removed conflict waits for a person: what changed under it stays here until it is resolved
  // (pushed, it would decide the conflict: the files removed inside gone from the server, or the directory made
  // there again). The scan then does not stream: its changes are sorted out first. A push under another policy than
  // manual is that decision (client-wins removes the directory there, the server keeping what it displaces).
  // So does a directory an interrupted pull was taking whole (ours moved aside): what is here of it may be a part, and
  // pushed, its files read as new (or ours, not moved yet, as made here) before the next pull finishes the take.
  const records = await listConflicts(replica.stateDir);
  const taking = records.filter((c) => c.takingWhole === true).map((c) => c.path);
  if (taking.length > 0) summary.taking = taking;
  const heldDirs = new Set([...taking, ...(policy !== 'manual' ? [] : outstanding(records).filter((c) => c.class === 'dir-removed').map((c) => c.path))]);
  // Small contents it hashes go up as it goes (staging is harmless before
  // they are logged): the server stages while the scan hashes on. (Not
  // those kept back.)
  let pre: Promise<Prestager> | undefined;
  const onContent = { upTo: _PRESTAGE_UP_TO, take: async (c: LocalChange, data: Buffer) => {
    if (heldDirs.size > 0 && (heldDirs.has(c.path) || _underAny(c.path, heldDirs))) return;
    const remote = await writable;
    if (!remote) return;
    const p = await (pre ??= import('./uploader.ts').then((m) => new m.Prestager(remote)));
    await p.offer({ hash: c.hash!, size: data.length, file: inDir(replica.root, c.path), seen: _seen(c), mode: c.fs?.mode, mtimeMs: c.fs?.mtimeMs }, data);
  } };
  // With nothing tracked gone, the scan hands its changes over as it makes them, and they go up while it goes on.
  const stream = new _Stream(replica, writable, log, policy, () => pre, summary, opts);
  let scan: ChangeScan;
  try {
    scan = await scanChanges(replica, { keepCache: true, onContent, gate: writable, stream: heldDirs.size > 0 ? undefined : stream });
    if (heldDirs.size > 0) _holdBack(scan, heldDirs, summary);
  } catch (err) {
    await stream.stop(); // nothing is written to the log once the lock is let go
    throw err;
  }
  try {
    const remote = await writable;
    summary.offline = !remote;
    // Fewer changes than a group: none went up yet, and they go the usual way (one log write for them all).
    const back = stream.giveBack();
    if (back) scan.changes = orderChanges([...back, ...scan.changes]);
    return await _reintegrate(replica, remote, log, scan, sent.length, policy, summary, opts, (await link).unreachable, pre, back || scan.streamed === 0 ? undefined : stream);
  } finally {
    // (A failure before _reintegrate waited for the stream: its last group may still be going to the log.)
    await stream.stop();
    _saveCache(replica, scan.cache);
  }
}

// The buckets a push wrote go into the scan cache as written, so the next scan need not read them back.
function _saveCache(replica: Replica, cache: ScanCache): void {
  try {
    cache.refreshed(replica).save(replica);
  } catch {
    // Only a cache: what it lacks, the next scan rebuilds.
  }
}

// Steps 2 and 3 of _pushWith, from its scan on.
async function _reintegrate(replica: Replica, remote: Remote | undefined, log: ReintLog, scan: ChangeScan, resent: number, policy: Policy, summary: PushSummary, opts: PushOptions, unreachable?: ImzError, pre?: Promise<Prestager>, stream?: _Stream): Promise<PushSummary> {
  // Content unchanged, stat facts moved (a copy back, a touch): remember the new facts so they are not hashed again.
  for (const r of scan.refresh) {
    const idx = await replica.get(r.path);
    if (idx && idx.hash === r.hash) await replica.set(r.path, { ...idx, size: r.fs.size, mode: r.fs.mode, mtimeMs: r.fs.mtimeMs, ctimeMs: r.fs.ctimeMs, ino: r.fs.ino, remote: undefined });
  }
  await replica.flushIndex();
  const own = new _OwnRecords();
  // What the scan sent as it went: every group is sent before anything else is logged, then each answer is settled.
  if (stream) {
    await stream.end();
    summary.logged += stream.logged;
    summary.streamed = stream.logged;
    const openConflicts = new Set(outstanding(await listConflicts(replica.stateDir)).map((c) => c.path));
    for (const g of stream.sent) await _settleGroup(replica, remote!, g.ops, await g.reply, policy, summary, opts, stream.byPath, openConflicts, own);
  }
  // A wiped root (all tracked files gone, from 2 up) or more than half of a larger tree deleted.
  const massDelete = scan.deleted > 0 && ((scan.tracked >= 2 && scan.deleted === scan.tracked) || (scan.tracked >= 4 && scan.deleted * 2 > scan.tracked));
  if (!opts.allowMassDelete && massDelete) {
    throw new ImzError('IMZ_MASS_DELETE', `cannot push: ${scan.deleted} of ${scan.tracked} tracked files${summary.held > 0 ? ' (outside directories held back by an unresolved conflict)' : ''} are deleted in ${replica.root}; if that is really what you want, push again with --allow-mass-delete`);
  }
  const changes = scan.changes;
  // The scan's uploads are finished while the operations are being logged (staging is harmless either way).
  const prestaging = pre?.then(async (p) => {
    await p.finish();
    return p;
  });
  prestaging?.catch(() => undefined); // (finish never fails; awaited below)
  const records: LogRecord[] = _superseded(log);
  const byPath = new Map<string, LocalChange>();
  let ops: LoggedOp[] = [];
  if (changes.length > 0) {
    const first = await log.reserve(changes.length);
    ops = changes.map((c, i) => _opOf(c, first + i));
    for (const c of changes) byPath.set(c.path, c);
    for (const op of ops) records.push({ t: 'op', op });
  }
  await log.append(records);
  summary.logged += ops.length;
  // The server may hold a content only as the current version of a path this push changes or removes: gone from
  // its tree by the time a store of the same content elsewhere needs it (a copy, then an edit of the original). Sent.
  const vanishing = new Set<string>();
  for (const c of changes) if (c.index?.hash && (c.kind === 'modify' || c.kind === 'delete' || c.kind === 'retype')) vanishing.add(c.index.hash);
  const prestaged = await prestaging;
  summary.uploadedBytes += prestaged?.sent ?? 0;
  const sendOf = (hash: string) => !prestaged?.staged.has(hash) && (vanishing.has(hash) || !prestaged?.held.has(hash));
  if (!remote) {
    if (ops.length === 0 && resent === 0) return summary;
    throw new ImzError(Codes.UNREACHABLE, `${unreachable?.message ?? 'cannot reach the server'}; ${ops.length + resent} local changes stay logged (push again when it is back)`, { logged: ops.length + resent });
  }
  if (ops.length === 0) {
    // (What was resent is acknowledged and indexed by now, its 'done' mark written: nothing in the log is pending.)
    if (stream) await _close(replica, log, own);
    else await log.clear();
    return summary;
  }

  // 3. Content the server lacks, staged by hash (resumable), then the
  // operations, group by group: a group's operations go out while the next
  // group's content uploads, so neither side waits for the other. Groups
  // are sent in order, each only once all its content is staged. (The
  // uploader, and what fetches the server's side of a conflict, load only
  // for a push that sends something: a no-op push on a big tree is mostly
  // start-up.)
  const uploader = import('./uploader.ts');
  let sending: Promise<void> = Promise.resolve();
  // With nothing left to upload (the scan's uploads took it all), one group: no wait between groups.
  const groupSize = ops.some((o) => _carriesContent(o, policy) && sendOf(o.state.hash)) ? _GROUP : ops.length;
  for (let g = 0; g < ops.length; g += groupSize) {
    const group = ops.slice(g, g + groupSize);
    const stores = group.filter((o) => _carriesContent(o, policy) && sendOf(o.state.hash));
    const before = summary.uploadedBytes;
    try {
      summary.uploadedBytes += await (await uploader).uploadBlobs(remote, stores.map((o) => _blobItem(replica, o, byPath.get(o.path))),
        (bytes, total) => opts.onEvent?.({ type: 'upload', bytes: before + bytes, total: before + total }), vanishing);
    } catch (err) {
      await sending.catch(() => undefined); // settle what is in flight before giving up
      throw err;
    }
    await sending;
    sending = _send(replica, remote, log, group, policy, summary, opts, byPath, false, own);
    // Awaited at the next group or below; until then its failure must not count as unhandled.
    sending.catch(() => undefined);
  }
  await sending;
  await _close(replica, log, own);
  return summary;
}

// Everything is acknowledged and indexed: the log is emptied (no 'done' mark first, which the clear makes moot; a
// crash in between resends, and the server answers duplicates).
async function _close(replica: Replica, log: ReintLog, own: _OwnRecords): Promise<void> {
  await replica.flushIndex();
  // The journal records just made are this replica's own, already in its index: when they are the very next ones,
  // the cursor passes them (written after the index, so never ahead of it), and status does not count them as
  // behind, nor the next pull read them back.
  const through = own.through(replica.head.cursor);
  if (through > replica.head.cursor && !replica.head.cloning) {
    replica.head = { ...replica.head, cursor: through };
    await replica.saveHead();
  }
  await log.clear();
}

// The drop record for the operations an earlier scan logged and never sent, which this scan supersedes ([] for none).
function _superseded(log: ReintLog): LogRecord[] {
  const { unsent } = log.pending();
  return unsent.length > 0 ? [{ t: 'drop', upto: unsent[unsent.length - 1]!.seq }] : [];
}

// The content an operation needs on the server, with the mode and time its store gives the file (the server can
// stage it so, and then only rename it in).
function _blobItem(replica: Replica, o: LoggedOp, c?: LocalChange): BlobItem {
  return { hash: o.state.hash, size: o.state.size, file: inDir(replica.root, o.path), seen: _seen(c), mode: o.state.mode, mtimeMs: o.state.mtimeMs };
}

// What the scan saw of a file it hashed (so the upload need not hash it again; the server checks every hash).
function _seen(c: LocalChange | undefined): { mtimeMs: number; ctimeMs: number; ino: number } | undefined {
  if (!c?.fs || !c.hash) return undefined;
  return { mtimeMs: c.fs.mtimeMs, ctimeMs: c.fs.ctimeMs, ino: c.fs.ino };
}

// The conflict of this push (or an open one) on a path above path: true when a policy moved our version aside, false
// when it waits for a person; undefined when there is none.
function _conflictAbove(path: string, summary: PushSummary, open: ReadonlySet<string>): boolean | undefined {
  for (let p = parentOf(path); p !== ''; p = parentOf(p)) {
    if (summary.settled.some((c) => c.path === p && c.localCopy !== undefined)) return true;
    if (open.has(p) || summary.conflicts.some((c) => c.path === p)) return false;
  }
  return undefined;
}

// Takes out of a scan the changes under (or of) the held directories, counted in summary.held; the mass-delete guard
// then weighs only the rest of the tree: the deletions that go, against the tracked files outside those directories
// (counted among all, a held directory holding most of them let a wiped tree through). A rename across the edge of
// a held directory goes as its half outside it (the removal of where the file was, or the file where it is now), so
// that the tree outside converges.
function _holdBack(scan: ChangeScan, dirs: ReadonlySet<string>, summary: PushSummary): void {
  const under = (p: string | undefined) => p !== undefined && (dirs.has(p) || _underAny(p, dirs));
  const kept: LocalChange[] = [];
  for (const c of scan.changes) {
    const here = under(c.path);
    const from = under(c.fromPath);
    if (!here && !from) {
      kept.push(c);
      continue;
    }
    summary.held++;
    if (c.kind === 'delete' && c.index?.type === EntryType.FILE) scan.deleted--;
    if (c.kind !== 'rename' || (here && from)) continue;
    if (here) {
      kept.push({ kind: 'delete', path: c.fromPath!, base: c.fromBase ?? 0, index: c.fromIndex });
      scan.deleted++;
    } else kept.push({ kind: 'create', path: c.path, base: c.base, fs: c.fs, hash: c.hash, index: c.index });
  }
  scan.changes = kept;
  // (Read now, before anything changes the cache; the topmost held directories only, so none is counted twice.)
  let inside = 0;
  for (const d of dirs) if (!_underAny(d, dirs)) inside += scan.cache.trackedFilesUnder(d);
  const tracked = scan.tracked - inside;
  Object.defineProperty(scan, 'tracked', { value: tracked });
}

/** Contents up to this size are uploaded during the scan (see _pushWith). */
const _PRESTAGE_UP_TO = 256 * 1024;

/** Operations per upload-then-send group (see _pushWith). */
const _GROUP = 2000;

/**
 * Whether the server must hold an operation's content before it is sent: a
 * store's; under client-wins or newest also a chmod's or a move's of a file,
 * which the server makes a store of when the path (or the move's source) is
 * gone there (a chmod here, the file removed by another replica).
 */
function _carriesContent(o: LoggedOp, policy: Policy): boolean {
  if (o.kind === OpKind.STORE) return true;
  return (policy === 'client-wins' || policy === 'newest') && (o.kind === OpKind.SETATTR || o.kind === OpKind.MOVE) && o.state.type === EntryType.FILE && o.state.hash !== '';
}

function _opOf(c: LocalChange, seq: number): LoggedOp {
  const fs = c.fs;
  const kind = c.kind === 'delete' ? OpKind.UNLINK : c.kind === 'rmdir' ? OpKind.REMOVEDIR : c.kind === 'mkdir' ? OpKind.MAKEDIR : c.kind === 'symlink' ? OpKind.LINK
    : c.kind === 'meta' ? OpKind.SETATTR : c.kind === 'rename' ? OpKind.MOVE
    : fs?.type === EntryType.DIR ? OpKind.MAKEDIR : fs?.type === EntryType.SYMLINK ? OpKind.LINK : OpKind.STORE;
  return {
    seq, kind, path: c.path, fromPath: c.fromPath ?? '', base: c.base, fromBase: c.fromBase ?? 0, baseMode: c.index?.mode ?? 0,
    state: fs
      ? { type: fs.type, size: fs.size, mode: fs.mode, mtimeMs: fs.mtimeMs, hash: c.hash ?? c.index?.hash ?? '', target: fs.target }
      : { type: EntryType.NONE, size: 0, mode: 0, mtimeMs: 0, hash: '', target: '' },
  };
}

function _wireOp(o: LoggedOp): Operation {
  return {
    seq: o.seq, kind: o.kind as Operation['kind'], path: o.path, fromPath: o.fromPath, base: o.base, fromBase: o.fromBase, baseMode: o.baseMode ?? 0,
    state: { path: o.path, type: o.state.type as Entry['type'], size: o.state.size, mode: o.state.mode, mtimeMs: o.state.mtimeMs, hash: o.state.hash ? fromHex(o.state.hash) : new Uint8Array(0), target: o.state.target, version: 0 },
  };
}

const BATCH = 500;

// Sends operations in batches (marking them sent first) and settles each result.
async function _send(replica: Replica, remote: Remote, log: ReintLog, ops: LoggedOp[], policy: Policy, summary: PushSummary, opts: PushOptions, byPath: Map<string, LocalChange>, finish = true, own?: _OwnRecords): Promise<void> {
  const openConflicts = new Set(outstanding(await listConflicts(replica.stateDir)).map((c) => c.path));
  const sendBatch = async (i: number) => {
    const batch = ops.slice(i, i + BATCH);
    await log.append([{ t: 'sent', upto: batch[batch.length - 1]!.seq }]);
    const reply = remote.session.request(Op.REINTEGRATE, { reintegrate: { replicaId: replica.config.replicaId, ops: batch.map(_wireOp), policy } });
    reply.catch(() => undefined); // awaited below, in order
    return { batch, reply };
  };
  // The next batch goes out before this one's answers are settled: the server applies it meanwhile (it decides
  // each operation itself; settling only brings this side in line).
  let next = ops.length > 0 ? sendBatch(0) : undefined;
  for (let i = 0; i < ops.length; i += BATCH) {
    const { batch, reply } = await next!;
    next = i + BATCH < ops.length ? sendBatch(i + BATCH) : undefined;
    next?.catch(() => undefined); // awaited at the next turn; a failure then must not count as unhandled
    await _settleGroup(replica, remote, batch, await reply, policy, summary, opts, byPath, openConflicts, own);
  }
  if (finish) await _finish(replica, log, ops);
}

// Settles the server's answer to a REINTEGRATE of ops, in order.
async function _settleGroup(replica: Replica, remote: Remote, ops: LoggedOp[], env: Envelope, policy: Policy, summary: PushSummary, opts: PushOptions, byPath: Map<string, LocalChange>, openConflicts: Set<string>, own: _OwnRecords | undefined): Promise<void> {
  const results = env.reintegrateReply?.results ?? [];
  if (results.length !== ops.length) throw new ImzError(Codes.PROTOCOL, `cannot push: the server answered ${results.length} of ${ops.length} operations`);
  const serverFetch: Entry[] = [];
  for (let k = 0; k < ops.length; k++) {
    const op = ops[k]!;
    await _settle(replica, remote, op, results[k]!, policy, summary, opts, byPath.get(op.path), serverFetch, openConflicts);
    // (Indexed as settled: a mkdir, chmod or move is claimed only when the server journalled just that.)
    own?.note(op, results[k]!, _CLAIMED.has(op.kind) || !results[k]!.server ? undefined : await replica.get(op.path));
  }
  // The server's side of what the policy gave it, taken here under the push's policy.
  if (serverFetch.length === 0) return;
  const lost = _goneUnder.get(serverFetch);
  // What a later operation of the group replaced since with a file or a link of ours (a removal inside a directory
  // that lost, then the link that won its place): the server's side of it is gone there, and here nothing is under it.
  const replaced = new Set<string>();
  for (let k = 0; k < ops.length; k++) {
    const st = results[k]!.status;
    if ((st === OpStatus.APPLIED || st === OpStatus.SAME) && (ops[k]!.kind === OpKind.STORE || ops[k]!.kind === OpKind.LINK)) replaced.add(ops[k]!.path);
  }
  let targets = replaced.size === 0 ? serverFetch : serverFetch.filter((e) => !_underAny(e.path, replaced));
  if (lost && lost.dirs.size > 0) {
    // A lost directory this push has put something in since (a file sent with the chmod): the server made it again.
    const queued = new Set(serverFetch.filter((e) => e.type === EntryType.NONE).map((e) => e.path));
    const kept = new Set<string>();
    for (const p of (await replica.all()).keys()) {
      if (queued.has(p)) continue;
      for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) if (queued.has(p.slice(0, i))) kept.add(p.slice(0, i));
    }
    if (kept.size > 0) targets = serverFetch.filter((e) => !(e.type === EntryType.NONE && kept.has(e.path)));
  }
  // (One entry per path, the newest: a directory's listing can repeat what another conflict in the group gave.)
  const newest = new Map<string, Entry>();
  for (const e of targets) if ((newest.get(e.path)?.version ?? -1) < e.version) newest.set(e.path, e);
  const res = await (await import('./reconcile.ts')).reconcile(replica, remote, [...newest.values()], undefined, policy);
  // What is left for a person there (a directory that cannot go: it holds files this replica added or ignores) is
  // the push's too: it exits 3, as status would say.
  for (const c of res.conflicts) if (!c.resolvedBy) summary.conflicts.push(c);
}

/** Operations per REINTEGRATE sent while the scan goes on (see _Stream). */
const _STREAM_GROUP = 500;

/** Sequence numbers reserved at a time by _Stream (each reservation is a durable write; unused ones are skipped). */
const _STREAM_SEQS = 2048;

/**
 * A scan's stream (see ChangeStream): each group of changes it hands over
 * is logged, has its content made sure of on the server, is marked sent
 * and goes up as one REINTEGRATE, in order, while the scan hashes on; the
 * server applies a group meanwhile. The answers are settled once the scan
 * is over (settling writes to the tree: a conflict copy, the server's side).
 * The first failure stops the sending and is thrown by end(): what was
 * logged stays logged (the next push resends what was sent, and its scan
 * supersedes the rest), and what was not, its scan finds again.
 */
class _Stream implements ChangeStream {
  /** The groups sent, with the server's answers to come. */
  readonly sent: { ops: LoggedOp[]; reply: Promise<Envelope> }[] = [];
  /** The changes taken, by path. */
  readonly byPath = new Map<string, LocalChange>();
  /** Operations logged. */
  logged = 0;
  private _remote: Remote | undefined;
  private _group: LocalChange[] = [];
  private _chain: Promise<void> = Promise.resolve();
  private _ahead: Promise<void>[] = [];
  private _failed: { err: unknown } | undefined;
  private _seq = 0;
  private _seqEnd = 0;
  private _dropped = false;
  // Contents held only as the current version of a path a change replaces: gone from the server's tree once that
  // change applies, so sent to the server even when it says it holds them (as _reintegrate's vanishing).
  private readonly _vanishing = new Set<string>();

  private readonly _replica: Replica;
  private readonly _writable: Promise<Remote | undefined>;
  private readonly _log: ReintLog;
  private readonly _policy: Policy;
  private readonly _pre: () => Promise<Prestager> | undefined;
  private readonly _summary: PushSummary;
  private readonly _opts: PushOptions;

  constructor(replica: Replica, writable: Promise<Remote | undefined>, log: ReintLog, policy: Policy, pre: () => Promise<Prestager> | undefined, summary: PushSummary, opts: PushOptions) {
    this._replica = replica;
    this._writable = writable;
    this._log = log;
    this._policy = policy;
    this._pre = pre;
    this._summary = summary;
    this._opts = opts;
  }

  async start(): Promise<boolean> {
    this._remote = await this._writable;
    return this._remote !== undefined;
  }

  async take(c: LocalChange): Promise<void> {
    this.byPath.set(c.path, c);
    if (c.index?.hash && (c.kind === 'modify' || c.kind === 'retype')) this._vanishing.add(c.index.hash);
    this._group.push(c);
    if (this._group.length >= _STREAM_GROUP) await this._flush();
  }

  /** The changes taken, when none was logged yet (fewer than a group): they are the caller's again, and nothing more is sent. */
  giveBack(): LocalChange[] | undefined {
    if (this.logged > 0 || this._group.length === 0) return undefined;
    const group = this._group;
    this._group = [];
    this._failed ??= { err: undefined };
    return group;
  }

  /** Sends nothing more, and waits for what is being sent (the scan failed). */
  async stop(): Promise<void> {
    this._failed ??= { err: undefined };
    await this._chain;
  }

  /** Sends what is gathered, and waits until every group is sent; throws the first failure. */
  async end(): Promise<void> {
    await this._flush();
    await this._chain;
    if (this._failed) throw this._failed.err;
  }

  private async _flush(): Promise<void> {
    const group = this._group;
    this._group = [];
    if (group.length === 0 || this._failed) return;
    // Numbered and logged in the scan's order, before any of their content goes up (as _reintegrate logs).
    const ops: LoggedOp[] = [];
    for (const c of group) {
      if (this._seq === this._seqEnd) {
        await this._writable; // (numberAbove first)
        this._seq = await this._log.reserve(_STREAM_SEQS);
        this._seqEnd = this._seq + _STREAM_SEQS;
      }
      ops.push(_opOf(c, this._seq++));
    }
    const records = this._dropped ? [] : _superseded(this._log);
    this._dropped = true;
    for (const op of ops) records.push({ t: 'op', op });
    await this._log.append(records);
    this.logged += ops.length;
    this._chain = this._chain.then(() => this._send(ops)).catch((err) => {
      this._failed ??= { err };
    });
    // Two groups ahead of the server at most (their contents wait in memory).
    this._ahead.push(this._chain);
    if (this._ahead.length > 2) await this._ahead.shift();
  }

  private async _send(ops: LoggedOp[]): Promise<void> {
    if (this._failed) return;
    const remote = this._remote!;
    // Content: what the scan offered is staged or held once the prestager is through with it; the rest goes up now.
    const pre = await this._pre();
    await pre?.finish();
    const stores = ops.filter((o) => _carriesContent(o, this._policy) && !pre?.staged.has(o.state.hash) && (this._vanishing.has(o.state.hash) || !pre?.held.has(o.state.hash)));
    if (stores.length > 0) {
      const before = this._summary.uploadedBytes;
      this._summary.uploadedBytes += await (await import('./uploader.ts')).uploadBlobs(remote, stores.map((o) => _blobItem(this._replica, o, this.byPath.get(o.path))),
        (bytes, total) => this._opts.onEvent?.({ type: 'upload', bytes: before + bytes, total: before + total }), this._vanishing);
    }
    await this._log.append([{ t: 'sent', upto: ops[ops.length - 1]!.seq }]);
    const reply = remote.session.request(Op.REINTEGRATE, { reintegrate: { replicaId: this._replica.config.replicaId, ops: ops.map(_wireOp), policy: this._policy } });
    reply.catch(() => undefined); // settled in order after the scan
    this.sent.push({ ops, reply });
  }
}

/** Operations whose record holds what the replica indexed: a store (given the sent mode, without set-id bits, and time), a symlink, a removal. */
const _CLAIMED = new Set<number>([OpKind.STORE, OpKind.LINK, OpKind.UNLINK, OpKind.REMOVEDIR]);

/**
 * The journal records a push's operations made (each result gives the
 * number of its record), to tell whether they are the ones right after the
 * replica's cursor.
 */
class _OwnRecords {
  private readonly _seqs: number[] = [];
  private _plain = true;

  /** Notes an operation's result; indexed: the path's index entry once settled (for a mkdir, chmod or move). */
  note(op: LoggedOp, r: OpResult, indexed?: IndexEntry): void {
    if (r.status === OpStatus.SAME) return; // nothing journalled
    // Anything else than an operation applied as sent (a conflict, a policy's win, a duplicate...) may have made
    // records this replica does not hold as the server does: left for a pull to read.
    if (r.status !== OpStatus.APPLIED || r.displaced || r.conflictClass || r.keptAs) {
      this._plain = false;
      return;
    }
    // A set-id or sticky bit is not given to a stored file (the server gives mode & 0o777): its record says
    // otherwise than this replica, so a pull reads it back.
    if (op.kind === OpKind.STORE && (op.state.mode & ~0o777) !== 0) {
      this._plain = false;
      return;
    }
    if (!_CLAIMED.has(op.kind)) {
      // A move, a mkdir or a mode change: the server records what it reads back from its disk, which can differ from
      // what this replica indexed (a file system that refuses the mode or time sent; a set-id bit a directory
      // inherits there); claimed when the state it journalled (r.server) is what this replica indexed.
      if (!_journalledAsIndexed(r, indexed)) {
        this._plain = false;
        return;
      }
      if (op.kind === OpKind.MOVE) this._seqs.push(r.version - 1); // its first record: the removal of the old path
    }
    this._seqs.push(r.version);
  }

  /**
   * The cursor past this push's records when they are exactly the records
   * after cursor (no other replica's, nor the server's own, among or before
   * them); cursor otherwise.
   */
  through(cursor: number): number {
    if (!this._plain || this._seqs.length === 0) return cursor;
    const s = [...this._seqs].sort((a, b) => a - b);
    for (let i = 0; i < s.length; i++) if (s[i] !== cursor + 1 + i) return cursor;
    return cursor + s.length;
  }
}

// True when the state a server journalled for a mkdir, chmod or move (r.server) is the state this replica indexed:
// what a pull reading the record back would find nothing to change in.
function _journalledAsIndexed(r: OpResult, e: IndexEntry | undefined): boolean {
  const s = r.server;
  if (!s || !e || s.version !== r.version || s.type !== e.type || s.type === EntryType.SYMLINK || s.mode !== e.mode) return false;
  return s.type !== EntryType.FILE || (toHex(s.hash) === e.hash && s.size === e.size && sameMtime(s.mtimeMs, e.mtimeMs));
}

// The index is written once for the whole push (each batch would rewrite
// most buckets); until then the log's 'sent' marks make a crash resend,
// which the server answers as duplicates.
async function _finish(replica: Replica, log: ReintLog, ops: LoggedOp[]): Promise<void> {
  await replica.flushIndex();
  await log.append([{ t: 'done', upto: ops[ops.length - 1]!.seq }]);
}

// True when one of path's ancestors is in dirs.
function _underAny(path: string, dirs: ReadonlySet<string>): boolean {
  for (let i = path.lastIndexOf('/'); i > 0; i = path.lastIndexOf('/', i - 1)) if (dirs.has(path.slice(0, i))) return true;
  return false;
}

/** Per settle group's list of server entries to take: the directories whose tracked contents are in it as removals. */
const _goneUnder = new WeakMap<Entry[], { dirs: Set<string>; paths?: string[] }>();

// The server's entry of a path (undefined: it has none).
async function _serverEntry(remote: Remote, path: string): Promise<Entry | undefined> {
  try {
    return await remote.stat(path);
  } catch (err) {
    if (!(err instanceof ImzError) || err.code !== Codes.NOT_FOUND) throw err;
    return undefined;
  }
}

// True when the server's entry e holds what the operation would have made of the path.
function _serverHolds(e: Entry | undefined, op: LoggedOp): boolean {
  switch (op.kind) {
    case OpKind.UNLINK:
    case OpKind.REMOVEDIR:
      return e === undefined;
    case OpKind.MAKEDIR:
      return e?.type === EntryType.DIR;
    case OpKind.LINK:
      return e?.type === EntryType.SYMLINK && e.target === op.state.target;
    case OpKind.SETATTR:
      // (Of the same type: a directory's chmod must not pass for done on a file made there since.)
      return e !== undefined && e.type === op.state.type && (e.mode & 0o777) === (op.state.mode & 0o777);
    default: // STORE, MOVE
      return e?.type === EntryType.FILE && toHex(e.hash) === op.state.hash;
  }
}

async function _settle(replica: Replica, remote: Remote, op: LoggedOp, r: OpResult, policy: Policy, summary: PushSummary, opts: PushOptions, change: LocalChange | undefined, serverFetch: Entry[], openConflicts: Set<string>): Promise<void> {
  const kind = KIND_NAMES[op.kind] ?? 'op';
  const index = async (path: string, version: number) => {
    if (op.state.type === EntryType.NONE) return replica.delete(path);
    // Index what was scanned; a write made since then shows up at the next scan.
    const fs = change?.path === path ? change.fs : undefined;
    const now = fs ?? fsEntryAt(replica.root, path);
    if (!now) return replica.delete(path);
    // Facts read now, not when the content was hashed (an operation resent after an interrupted push: the file may
    // have been written since): recorded so that they never match, and the next scan hashes the file again instead
    // of taking a later edit for the logged content.
    const ctimeMs = fs ? now.ctimeMs : 0;
    const e = { type: op.state.type as never, version, hash: op.state.hash, size: now.size, mode: now.mode, mtimeMs: now.mtimeMs, ctimeMs, ino: now.ino, target: now.target };
    // A path the scan found new (no index entry): its bucket need not be parsed.
    if (fs && change!.index === undefined) await replica.addNew(path, e);
    else await replica.set(path, e);
  };
  const there = r.status === OpStatus.DUPLICATE ? await _serverEntry(remote, op.path) : undefined;
  if (r.status === OpStatus.DUPLICATE && !_serverHolds(there, op)) {
    // The server counts this operation done (an interrupted push sent it),
    // but does not hold its result: that try met a conflict, or the path
    // changed since. Left unindexed, so the fresh scan of this same push
    // sends it again as a new operation, checked like any other.
    if (change === undefined) return;
    // An operation of that fresh scan itself (numbered above what the server applied from us, it never should be):
    // not applied, and said so, so that the push does not pass for done. Left unindexed, the next push sends it again.
    summary.rejected++;
    opts.onEvent?.({ type: 'op', path: op.path, kind, status: 'rejected', message: 'the server took it for an operation it had already applied (push again)' });
    return;
  }
  if (r.status === OpStatus.APPLIED || r.status === OpStatus.DUPLICATE || r.status === OpStatus.SAME) {
    if (op.kind === OpKind.MOVE) await replica.delete(op.fromPath);
    // A chmod of a file merged over a content change made there (or resent, answered as a duplicate): indexed at the
    // version it was based on (the content here) unless the server's content is this replica's, so that the next
    // pull brings that content, and a content change made here meanwhile meets it as a conflict. At the merged
    // version, a content push went over it unseen.
    const merged = op.kind === OpKind.SETATTR && op.state.type === EntryType.FILE && (r.conflictClass === 'meta/update' || r.status === OpStatus.DUPLICATE);
    const held = r.status === OpStatus.DUPLICATE ? there : r.server ?? undefined;
    const ours = held?.type === EntryType.FILE && toHex(held.hash) === op.state.hash;
    await index(op.path, merged && !ours ? op.base : r.version);
    // An open conflict on this path is settled by this push going through.
    if (openConflicts.delete(op.path)) await clearConflict(replica.stateDir, op.path);
    summary.applied++;
    opts.onEvent?.({ type: 'op', path: op.path, kind, status: r.status === OpStatus.APPLIED ? 'applied' : r.status === OpStatus.DUPLICATE ? 'duplicate' : 'same' });
    if (r.displaced) {
      // client-wins (or newest): the server kept the version ours replaced, in its state.
      const c: ConflictRecord = {
        path: op.path, class: (r.conflictClass || 'update/update') as ConflictRecord['class'], at: 'push', local: null,
        server: r.server ? { type: r.server.type, version: r.server.version, hash: r.server.hash.length ? toHex(r.server.hash) : undefined, size: r.server.size, mtimeMs: r.server.mtimeMs } : null,
        detected: new Date().toISOString(), resolvedBy: policy, serverDisplaced: r.displaced,
      };
      await saveConflict(replica.stateDir, c);
      summary.settled.push(c);
      opts.onEvent?.({ type: 'displaced', path: op.path, displaced: r.displaced });
    }
    return;
  }
  if (r.status === OpStatus.REJECTED) {
    // Refused because a path above it is in conflict (our new directory where the server has a file): under manual
    // it waits with that conflict (held: exit 3, sent again once resolved); where a policy moved our directory aside
    // it went with it. Counted as refused, every push and sync failed (exit 1) and never settled.
    const above = r.error?.code === Codes.CONFLICT ? _conflictAbove(op.path, summary, openConflicts) : undefined;
    if (above !== undefined) {
      if (!above) summary.held++;
      opts.onEvent?.({ type: 'op', path: op.path, kind, status: above ? 'aside' : 'held', message: r.error?.message });
      return;
    }
    summary.rejected++;
    opts.onEvent?.({ type: 'op', path: op.path, kind, status: 'rejected', message: r.error?.message });
    return;
  }
  // A conflict: the policy decides what happens here; nothing is lost either way.
  opts.onEvent?.({ type: 'op', path: op.path, kind, status: 'conflict' });
  const server = r.server;
  const c: ConflictRecord = {
    path: op.path, class: (r.conflictClass || 'update/update') as ConflictRecord['class'], at: 'push',
    local: op.state.type === EntryType.NONE ? null : { type: op.state.type, hash: op.state.hash || undefined, size: op.state.size, mode: op.state.mode, mtimeMs: op.state.mtimeMs, target: op.state.target || undefined, version: op.base },
    server: server ? sideOfEntry(server) : null,
    detected: new Date().toISOString(),
  };
  const abs = join(replica.root, op.path);
  if (policy === 'keep-both' && r.keptAs) {
    // The server stored our version beside its own: mirror that here, then take its version of the path.
    checkPath(r.keptAs, 'keep both versions');
    // The keep name lies beside the path (never through another directory, which could be a link out of the replica) and is new.
    if (parentOf(r.keptAs) !== parentOf(op.path) || r.keptAs === op.path || lstatSync(join(replica.root, r.keptAs), { throwIfNoEntry: false })) {
      throw new ImzError(Codes.PROTOCOL, `cannot keep both versions of ${op.path}: the server named the copy ${JSON.stringify(r.keptAs).slice(0, 200)}, which is not a new name beside it`);
    }
    await rename(abs, join(replica.root, r.keptAs));
    const now = fsEntryAt(replica.root, r.keptAs);
    if (now) {
      // Renamed, so only its ctime moved since the scan hashed it, unless it was written since (or the operation was
      // resent, hashed by an earlier run): then indexed with facts that never match, for the next scan to hash again.
      const seen = change?.path === op.path ? change.fs : undefined;
      const moved = seen && now.ino === seen.ino ? placedFacts(now, seen) : { ...now, ctimeMs: 0 };
      await replica.set(r.keptAs, { type: op.state.type as never, version: r.version, hash: op.state.hash, size: moved.size, mode: moved.mode, mtimeMs: moved.mtimeMs, ctimeMs: moved.ctimeMs, ino: moved.ino, target: moved.target });
    }
    await replica.delete(op.path);
    if (server) await _takeServer(remote, op.path, server, serverFetch);
    c.localCopy = r.keptAs;
    c.resolvedBy = 'keep-both';
    await saveConflict(replica.stateDir, c);
    summary.settled.push(c);
    opts.onEvent?.({ type: 'displaced', path: op.path, displaced: r.keptAs });
    return;
  }
  if (policy === 'manual') {
    if (server && server.type === EntryType.FILE) {
      c.serverBlob = blobPath(toHex(server.hash));
      await mkdir(join(replica.stateDir, 'conflicts', 'blobs'), { recursive: true });
      await (await import('./fetcher.ts')).fetchFiles(remote, [{ entry: server, dest: join(replica.stateDir, c.serverBlob) }], async (b) => {
        for (const f of b) await rename(f.tmp, f.item.dest);
      });
    }
    await saveConflict(replica.stateDir, c);
    summary.conflicts.push(c);
    opts.onEvent?.({ type: 'conflict', conflict: c });
    return;
  }
  // server-wins (and newest or keep-both when the server's side stays): keep
  // the local version under a conflict name, never pushed, and take the server's.
  // (Never looked at through a symlink: a directory replaced here by a link to elsewhere holds nothing of the replica.)
  const local = parentsAreDirs(replica.root, op.path) ? statEntrySync(replica.root, op.path) : undefined;
  // A directory made here where the server has a file or a link (not one this replica tracked: see below) goes aside
  // whole, as a file does; what the push sent inside it is refused, and counted as gone with it.
  const dirAside = local !== undefined && typeof local !== 'string' && local.type === EntryType.DIR && server !== null && server !== undefined &&
    server.type !== EntryType.DIR && (await replica.get(op.path))?.type !== EntryType.DIR;
  if (local && typeof local !== 'string' && (local.type !== EntryType.DIR || dirAside)) {
    // A free name: an earlier conflict on the path at the same version (0: the server removed it) kept one there.
    const copy = freeName(replica.root, conflictCopyName(op.path, replica.config.replicaId, server?.version ?? r.version));
    await rename(abs, join(replica.root, copy));
    if (dirAside) await replica.forgetInside(op.path);
    c.localCopy = copy;
  }
  // Recorded even when nothing local needed keeping (a removal that lost): the user sees what happened.
  c.resolvedBy = policy;
  await saveConflict(replica.stateDir, c);
  summary.settled.push(c);
  opts.onEvent?.({ type: 'conflict', conflict: c });
  const idx = await replica.get(op.path);
  if (local && typeof local !== 'string' && local.type === EntryType.DIR && idx?.type === EntryType.DIR) {
    // A directory's mode change lost: nothing to keep aside (a mode). Taken as unchanged here, it takes the server's
    // side now: its mode, or its removal or replacement with what it held (all it tracked: the server has nothing
    // under it; what changed here meanwhile is a conflict, as at a pull). Dropped from the index, it stayed here
    // untracked: the next push made it again, or the server's mode was never taken.
    await replica.set(op.path, { ...idx, mode: local.mode, mtimeMs: local.mtimeMs, ctimeMs: local.ctimeMs, ino: local.ino });
    const gone = (path: string): Entry => ({ path, type: EntryType.NONE, size: 0, mode: 0, mtimeMs: 0, hash: new Uint8Array(0), target: '', version: r.version });
    // (Once per path: a chmod -R that lost has each directory's contents under every directory above it.)
    let g = _goneUnder.get(serverFetch);
    if (!g) _goneUnder.set(serverFetch, (g = { dirs: new Set() }));
    if (_underAny(op.path, g.dirs)) {
      if (server?.type === EntryType.DIR) serverFetch.push(server);
      return;
    }
    if (server?.type !== EntryType.DIR) {
      g.dirs.add(op.path);
      g.paths ??= [...(await replica.all()).keys()];
      const prefix = `${op.path}/`;
      for (const p of g.paths) if (p.startsWith(prefix)) serverFetch.push(gone(p));
    }
    serverFetch.push(server ?? gone(op.path));
    return;
  }
  await replica.delete(op.path);
  if (server) await _takeServer(remote, op.path, server, serverFetch);
}

// Queues the server's side of a conflict to be taken here. A directory that won (over our removal of it, or our file or
// link in its place) holds entries this replica may never have had (a pull that met the same conflict skipped them,
// its cursor past them): taken with it, as resolve --take server does.
async function _takeServer(remote: Remote, path: string, server: Entry, serverFetch: Entry[]): Promise<void> {
  serverFetch.push(server);
  if (server.type !== EntryType.DIR) return;
  const prefix = `${path}/`;
  for await (const b of remote.list(path)) for (const e of b.entries) if (e.path.startsWith(prefix)) serverFetch.push(e);
}
