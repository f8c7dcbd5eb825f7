import { join } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { type Entry, EntryType } from '../protocol/messages.ts';
import { type ConflictRecord, listConflicts, outstanding, saveConflict } from './conflicts.ts';
import { isConflictCopy } from './changes.ts';
import { IGNORE_FILE, loadIgnore, loadIgnoreKeyed } from './ignore_rules.ts';
import { UNKNOWN_VERSION, bucketOf } from './index_model.ts';
import { checkPolicy } from './policy.ts';
import { type ReconcileEvent, type ReconcileResult, reconcile, sameState } from './reconcile.ts';
import { type SecurityOptions, connectReplica } from './credentials.ts';
import type { Remote } from './remote.ts';
import { printable } from './paths.ts';
import { type Head, Replica } from './replica.ts';
import { explainFsError, sweepStateTemps } from './atomic_fs.ts';
import { type IgnoreFn, walkTree } from './tree_scan.ts';

/** Options of pull. */
export interface PullOptions {
  /** Compare the whole tree by hash instead of replaying the journal (server replaced, or journal trimmed). */
  resync?: boolean;
  /** Token and TLS settings from the command line (over those saved at clone). */
  security?: SecurityOptions;
  onEvent?: (e: PullEvent) => void;
  /** Conflict policy (default from .imz/config): manual leaves conflicts for resolve; the others settle them. */
  policy?: string;
  /** Retry rounds for files that changed on the server while being fetched. */
  staleRounds?: number;
}

/** Progress and findings of a pull. */
export type PullEvent = ReconcileEvent | { type: 'connected'; serverId: string; behind: number } | { type: 'resync'; reason: string } | { type: 'skipped'; path: string; reason: string };

/** What a pull did. */
export interface PullSummary extends ReconcileResult {
  cursor: number;
  /** Conflicts recorded in the replica and not yet resolved (this run's and earlier ones). */
  outstanding: number;
  records: number;
  resynced: boolean;
}

/**
 * Replays the server's journal since HEAD into the replica: coalesces the
 * records to one final state per path, applies them (reconcile), then
 * advances HEAD. A changed server identity or a cursor below the journal's
 * oldest record is refused unless resync is asked for.
 */
export async function pull(dir: string, opts: PullOptions = {}): Promise<PullSummary> {
  // A full disk or a refused write becomes one line that says where and what to do.
  return _pull(dir, opts).catch((err) => {
    throw explainFsError(err, 'pull', dir);
  });
}

async function _pull(dir: string, opts: PullOptions = {}): Promise<PullSummary> {
  const replica = await Replica.open(dir, { rebuildHead: opts.resync === true });
  await replica.lock();
  try {
    await replica.sweepTemps();
    const remote = await connectReplica(replica, opts.security);
    try {
      return await pullWith(replica, remote, opts);
    } finally {
      remote.close();
    }
  } finally {
    await replica.unlock();
  }
}

/** Pull over an open, locked replica and a connected remote (clone and sync reuse it). */
export async function pullWith(replica: Replica, remote: Remote, opts: PullOptions = {}): Promise<PullSummary> {
  // A full disk or a refused write becomes one line that says where and what to do.
  const action = replica.head.cloning ? 'clone' : 'pull';
  return _pullWith(replica, remote, opts).catch((err) => {
    throw explainFsError(err, action, replica.root);
  });
}

async function _pullWith(replica: Replica, remote: Remote, opts: PullOptions = {}): Promise<PullSummary> {
  // State files a killed run was writing (Replica.sweepTemps covers only the tree's fetch dirs).
  sweepStateTemps(['', 'index', 'conflicts', 'conflicts/blobs'].map((d) => join(replica.stateDir, d)));
  const info = remote.info;
  const head = replica.head;
  const policy = checkPolicy(opts.policy ?? replica.config.policy ?? 'manual');
  let resync = opts.resync === true || head.cloning === true;
  if (!resync && head.serverId !== info.serverId) {
    throw new ImzError(Codes.IDENTITY, `cannot pull: the server at ${remote.address} is not the one this replica follows (it is ${info.serverId}, the replica follows ${head.serverId || 'none'}); if it replaced that server, run \`imz pull --resync\` to compare by hash and fetch what differs (local changes are kept)`);
  }
  if (!resync && info.journalFirst > 0 && head.cursor + 1 < info.journalFirst) {
    throw new ImzError(Codes.CURSOR_GONE, `cannot pull: the server's journal starts at record ${info.journalFirst} but this replica stopped at ${head.cursor}; run \`imz pull --resync\` to compare by hash and fetch what differs (local changes are kept)`);
  }
  opts.onEvent?.({ type: 'connected', serverId: info.serverId, behind: Math.max(0, info.journalLast - head.cursor) });
  // Files an earlier run could not fetch (their records are behind the cursor) are asked for again below.
  const total: PullSummary = { changed: 0, conflicts: [], stale: [...(head.owed ?? [])], files: 0, bytes: 0, cursor: head.cursor, records: 0, resynced: resync, outstanding: 0 };
  const merge = (r: ReconcileResult) => {
    total.changed += r.changed;
    total.conflicts.push(...r.conflicts);
    total.files += r.files;
    total.bytes += r.bytes;
    total.stale = r.stale;
  };

  if (resync) {
    opts.onEvent?.({ type: 'resync', reason: head.cloning ? 'clone' : head.serverId !== info.serverId ? 'server identity changed' : 'requested' });
    // What a damaged index bucket held is compared by hash again (the error that names one says to run this); set
    // aside only now, the server reached, so that a resync that cannot connect leaves the damage to be seen again.
    const damaged = replica.setAsideDamagedBuckets();
    for (const b of damaged) opts.onEvent?.({ type: 'resync', reason: `${replica.bucketFile(b).slice(replica.stateDir.length + 1)} was damaged: set aside, its paths compared by hash` });
    const sameServer = head.serverId === info.serverId || head.serverId === '';
    const listed: Entry[] = [];
    let cursor = 0;
    for await (const b of remote.list('')) {
      listed.push(...b.entries);
      cursor = checkSeq(b.cursor, 'journal cursor');
      // What the server cannot replicate (special files, bad names): said, not silently missing.
      // The names come from the wire: control characters are shown escaped, never sent to the terminal.
      for (const s of b.skipped) opts.onEvent?.({ type: 'skipped', path: printable(String(s.path).slice(0, 300)), reason: printable(String(s.reason).slice(0, 200)) });
    }
    const seen = new Set(listed.map((e) => e.path));
    const targets = listed;
    // HEAD was lost: which server this replica followed is unknown, so what it tracks and this server lacks may be
    // new here or removed there (or on another server): neither removed here nor pushed as new, each is a conflict.
    const unknown = new Set<string>();
    if (replica.headRebuilt) {
      for (const [p] of await replica.all()) if (!seen.has(p)) unknown.add(p);
      for (const p of unknown) await replica.delete(p);
    }
    if (!sameServer || replica.headRebuilt) {
      // The index's versions count another server's records (or those of one unknown): an entry keeps its meaning
      // only where this server holds the same; elsewhere its version never matches, so a change made here meets
      // the server's as a conflict instead of passing the server's check by a chance equality (a removal here took
      // away a file of the new server that this replica never had).
      for (const t of listed) {
        const idx = await replica.get(t.path);
        // (A remote row too: a file written here over one never fetched would go up on the old server's number.)
        if (idx) await replica.set(t.path, { ...idx, version: sameState(idx, t) ? t.version : UNKNOWN_VERSION });
      }
    }
    if (sameServer && !replica.headRebuilt) {
      // Tracked paths the server no longer has were removed there.
      for (const [p, e] of await replica.all()) {
        if (!seen.has(p)) targets.push({ path: p, type: EntryType.NONE, size: 0, mode: 0, mtimeMs: 0, hash: new Uint8Array(0), target: '', version: e.version });
      }
    } else {
      // A different server: what it lacks stays here as local files, untracked.
      for (const [p] of await replica.all()) if (!seen.has(p)) await replica.delete(p);
    }
    if (sameServer && damaged.length > 0) {
      const inDamaged = new Set(damaged);
      total.conflicts.push(...(await _unknownHere(replica, (p) => inDamaged.has(bucketOf(p)), seen)));
    }
    if (unknown.size > 0) total.conflicts.push(...(await _unknownHere(replica, (p) => unknown.has(p), seen)));
    merge(await reconcile(replica, remote, targets, opts.onEvent, policy));
    // A clone stays marked unfinished until the journal replay below is done
    // too: killed in between, the same `imz clone` resumes it.
    replica.head = replayedTo(info.serverId, cursor, total.stale, head.cloning);
    await replica.saveHead();
    total.cursor = cursor;
  }

  // Journal replay (after a resync it picks up what changed during the listing).
  const rounds = opts.staleRounds ?? 5;
  const owedBefore = new Set(head.owed ?? []);
  for (let round = 0; round <= rounds; round++) {
    const finalState = new Map<string, Entry>();
    let last = replica.head.cursor;
    let n = 0;
    for await (const batch of remote.journal(replica.head.cursor)) {
      for (const r of batch) {
        checkSeq(r.seq, 'journal record number');
        finalState.set(r.entry.path, r.entry);
        if (r.seq > last) last = r.seq;
        n++;
      }
    }
    // A stale file has a newer record coming; until then, ask for it again by its current server state.
    const retry = total.stale.filter((p) => !finalState.has(p));
    if (n === 0 && retry.length === 0) break;
    // (A record of .imzignore in this round changes the server's rules: the indexed ones are not its rules any more.)
    const targets = [...finalState.values(), ...(await owedEntries(replica, remote, retry, { rulesChanging: finalState.has(IGNORE_FILE) }))];
    total.records += n;
    const r = await reconcile(replica, remote, targets, opts.onEvent, policy);
    // Nothing new in the journal, and out of reach only files an earlier run could not fetch either: the server's disk
    // differs from its records unseen by it, and waiting here will not change that; they stay owed to the next pull.
    // (A file that just changed there gets the rounds below: the server is about to journal it.)
    const same = n === 0 && r.stale.every((p) => owedBefore.has(p));
    merge(r);
    replica.head = replayedTo(info.serverId, last, total.stale, head.cloning);
    await replica.saveHead();
    total.cursor = last;
    if (r.stale.length === 0 || same) break;
    await new Promise((res) => setTimeout(res, 100 * (round + 1)));
  }
  if (replica.head.cloning) {
    replica.head = replayedTo(info.serverId, replica.head.cursor, replica.head.owed ?? []);
    await replica.saveHead();
  }
  total.outstanding = outstanding(await listConflicts(replica.stateDir)).length;
  return total;
}

/** Owed paths asked about at once (the session matches each answer to its request). */
const _STAT_WINDOW = 64;

/**
 * The server's entries for owed paths (see Head.owed), asked for a window at
 * a time. Paths it no longer has, and those the .imzignore both sides
 * share now excludes (the server journals such a path no more), are left
 * out: nothing is owed for them. With rulesChanging (a record of
 * .imzignore not applied yet), or with .imzignore owed itself, no path is
 * left out for its rules.
 */
export async function owedEntries(replica: Replica, remote: Remote, paths: readonly string[], opts: { rulesChanging?: boolean } = {}): Promise<Entry[]> {
  if (paths.length === 0) return [];
  // Rules being replayed, or .imzignore itself owed: the server's rules are not the ones here, so none excludes.
  const unknownRules = opts.rulesChanging === true || paths.includes(IGNORE_FILE);
  const { ignore, key } = unknownRules ? { ignore: undefined, key: '' } : await loadIgnoreKeyed(replica.root);
  // Only rules the server has too (.imzignore as indexed): one not pushed yet excludes nothing there, and the path stays owed.
  const shared = ignore !== undefined && (await replica.get(IGNORE_FILE))?.hash === key;
  const asked = shared ? paths.filter((p) => !_excluded(ignore, p)) : paths;
  const out: Entry[] = [];
  for (let i = 0; i < asked.length; i += _STAT_WINDOW) {
    const part = asked.slice(i, i + _STAT_WINDOW);
    const got = await Promise.all(part.map((p) => remote.stat(p).catch((err) => {
      if (!(err instanceof ImzError) || err.code !== Codes.NOT_FOUND) throw err;
      return undefined;
    })));
    // (An answer about another path than the one asked is not taken for it.)
    got.forEach((e, k) => { if (e && e.path === part[k]) out.push(e); });
  }
  return out;
}

// True when ignore excludes p or a directory above it.
function _excluded(ignore: IgnoreFn, p: string): boolean {
  if (ignore(p, false)) return true;
  for (let i = p.indexOf('/'); i > 0; i = p.indexOf('/', i + 1)) if (ignore(p.slice(0, i), true)) return true;
  return false;
}

/**
 * HEAD once the journal is replayed up to cursor: owed lists the files that
 * could not be fetched (they kept changing on the server), which the next
 * pull asks for again although the cursor is past their records.
 */
export function replayedTo(serverId: string, cursor: number, owed: readonly string[], cloning?: boolean): Head {
  return { serverId, cursor, ...(cloning ? { cloning: true } : {}), ...(owed.length > 0 ? { owed: [...new Set(owed)].sort() } : {}) };
}

/**
 * A journal sequence number from the wire, checked before it can reach HEAD:
 * a whole number, not negative, exactly representable (a forged NaN or 2^60
 * would be saved as null or as a cursor no real journal ever reaches).
 */
export function checkSeq(n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new ImzError(Codes.PROTOCOL, `cannot pull: the server sent an invalid ${what} (${n})`);
  return n;
}

/**
 * Paths here the index cannot vouch for (isUnknown: in a damaged index
 * bucket, or tracked when HEAD was lost) that the server does not have: this
 * replica's own new files, or files it had that the server removed since;
 * nothing here can tell which. Each becomes a conflict (the path
 * left as it is, exit 3), indexed at an unknown earlier version so that a
 * push meets the server's removal instead of making the file again there
 * (imz resolve PATH --take local sends it, --take server removes it here,
 * kept in .imz/conflicts/blobs).
 */
async function _unknownHere(replica: Replica, isUnknown: (path: string) => boolean, onServer: Set<string>): Promise<ConflictRecord[]> {
  const out: ConflictRecord[] = [];
  const ignore = await loadIgnore(replica.root);
  for await (const e of walkTree(replica.root, '', { ignore })) {
    // (Conflict copies, and what lies in one, are never tracked: nothing to tell.)
    if (onServer.has(e.path) || !isUnknown(e.path) || isConflictCopy(e.path) || (await replica.get(e.path))) continue;
    // Facts that never match (a symlink is compared by its target alone: none is empty), so a push sends it.
    await replica.set(e.path, { type: e.type, version: 1, hash: '', size: -1, mode: -1, mtimeMs: 0, ctimeMs: 0, ino: 0, target: '' });
    const c: ConflictRecord = {
      path: e.path, class: 'update/remove', at: 'pull', local: { type: e.type, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, target: e.target || undefined }, server: null,
      detected: new Date().toISOString(),
    };
    await saveConflict(replica.stateDir, c);
    out.push(c);
  }
  await replica.flushIndex();
  return out;
}
