import { Codes, ImzError } from '../protocol/errors.ts';
import { type Entry, type JournalRecord, Op } from '../protocol/messages.ts';
import { type PullEvent, checkSeq, owedEntries, pullWith, replayedTo } from './pull.ts';
import { reconcile } from './reconcile.ts';
import { type SecurityOptions, connectReplica } from './credentials.ts';
import type { Remote } from './remote.ts';
import { Replica, withReplicaLock } from './replica.ts';
import { checkPolicy } from './policy.ts';

/** Options of follow. */
export interface FollowOptions {
  onEvent?: (e: FollowEvent) => void;
  /** Token and TLS settings from the command line (over those saved at clone). */
  security?: SecurityOptions;
  /** Aborting stops following at once: the connection closes, a batch being applied is dropped whole (its records come again next time), and state stays consistent. */
  signal?: AbortSignal;
  /** Heartbeat period: a peer silent for this long (plus the same again to answer) is dead. Default 5 s. */
  heartbeatMs?: number;
  /** Cap of the reconnect backoff. Default 30 s. */
  maxBackoffMs?: number;
  /** The first catch-up compares the whole tree by hash, as pull --resync does (rebuilding a lost HEAD). */
  resync?: boolean;
  /** When a server change meets a local one (default from .imz/config). */
  policy?: string;
}

/** What follow reports, beyond pull's events. */
export type FollowEvent =
  | PullEvent
  | { type: 'following'; address: string; cursor: number; stale: number }
  | { type: 'applied'; records: number; cursor: number; stale: number }
  | { type: 'disconnected'; message: string; retryInMs: number }
  /** Files owed (see Head.owed) asked for again while following: how many came, how many are still owed. */
  | { type: 'retried'; fetched: number; stale: number };

/** The first wait before owed files are asked for again while following (doubled each time some stay owed). */
const OWED_RETRY_MS = 5_000;
/** The longest wait between two such tries. */
const OWED_RETRY_MAX_MS = 300_000;

/**
 * `imz pull --follow`: catches up, subscribes to the server's journal and
 * replays each record as it is committed, under the same rules as pull
 * (atomic apply, local changes never overwritten). When the server goes
 * away or the link goes silent (heartbeats), it reconnects with capped
 * exponential backoff and jitter and catches up from its cursor. The replica
 * lock is held per applied batch only, so cron pushes still get their turn.
 */
export async function follow(dir: string, opts: FollowOptions = {}): Promise<{ cursor: number }> {
  const heartbeat = opts.heartbeatMs ?? (Number(process.env.IMZ_HEARTBEAT_MS) || 5000);
  const maxBackoff = opts.maxBackoffMs ?? 30_000;
  const stopped = () => opts.signal?.aborted === true;
  // A policy that does not exist is bad usage, said at once (not retried as if the server were away).
  if (opts.policy !== undefined) checkPolicy(opts.policy);
  let attempt = 0;
  let cursor = 0;
  // Until a resync asked for has been done (the server may be away at first).
  let resync = opts.resync === true;
  while (!stopped()) {
    let remote: Remote | undefined;
    let timer: ReturnType<typeof setInterval> | undefined;
    let retryTimer: ReturnType<typeof setTimeout> | undefined;
    let applying: Promise<void> | undefined;
    // Set once this connection is being given up: a batch still finishing must not arm a retry that would outlive it.
    let closing = false;
    const onAbort = () => remote?.close();
    opts.signal?.addEventListener('abort', onAbort);
    try {
      const first = await Replica.open(dir, { rebuildHead: resync }); // re-read each time: the address may have been changed
      remote = await connectReplica(first, opts.security, { timeoutMs: Math.max(2000, heartbeat) });
      const r = remote;
      // Heartbeats from the start (the catch-up too): a ping unanswered
      // within a period means a dead peer or a half-open link.
      timer = setInterval(() => {
        let answered = false;
        const t = setTimeout(() => { if (!answered) r.close(); }, heartbeat);
        r.session.request(Op.PING).then(() => { answered = true; clearTimeout(t); }, () => { clearTimeout(t); });
      }, heartbeat);
      let stale = 0;
      await withReplicaLock(dir, opts.signal, (replica) => pullWith(replica, r, { onEvent: opts.onEvent, resync, policy: opts.policy }).then((s) => {
        cursor = s.cursor;
        stale = s.stale.length;
        resync = false;
      }), undefined, { rebuildHead: resync });
      attempt = 0;
      opts.onEvent?.({ type: 'following', address: r.address, cursor, stale });
      // Frames are read as they come and applied in batches: whatever
      // arrived while one batch was being applied goes in the next one.
      const waiting: JournalRecord[] = [];
      let failed: unknown;
      // Files owed (they kept changing on the server) are asked for again now and then, between batches: a follower
      // that stays connected (a mirror) would otherwise keep the old content until some later record of each.
      let retryDue = false;
      let retryWait = OWED_RETRY_MS;
      const scheduleRetry = (owed: number) => {
        if (owed === 0) {
          retryWait = OWED_RETRY_MS;
          return;
        }
        if (retryTimer || closing) return;
        retryTimer = setTimeout(() => {
          retryTimer = undefined;
          if (closing) return;
          retryDue = true;
          if (!applying) applying = drain().catch((e) => { failed = e; r.close(); }).finally(() => { applying = undefined; });
        }, retryWait);
        retryTimer.unref?.();
        retryWait = Math.min(OWED_RETRY_MAX_MS, retryWait * 2);
      };
      const drain = async () => {
        while ((waiting.length > 0 || (retryDue && !closing)) && failed === undefined && !stopped()) {
          if (waiting.length === 0) {
            retryDue = false;
            const left = await _retryOwed(dir, r, opts);
            scheduleRetry(left);
            continue;
          }
          const records = waiting.splice(0);
          const finalState = new Map<string, Entry>();
          let last = cursor;
          for (const rec of records) {
            checkSeq(rec.seq, 'journal record number');
            if (rec.seq <= cursor) continue;
            finalState.set(rec.entry.path, rec.entry);
            last = Math.max(last, rec.seq);
          }
          if (finalState.size === 0) continue;
          let stale = 0;
          let owedNow = 0;
          await withReplicaLock(dir, undefined, async (replica) => {
            const res = await reconcile(replica, r, [...finalState.values()], opts.onEvent, opts.policy ?? replica.config.policy ?? 'manual');
            // What could not be fetched (it kept changing there) stays owed, for the next pull, with what was owed before and has no record here.
            const owed = [...(replica.head.owed ?? []).filter((p) => !finalState.has(p)), ...res.stale];
            stale = res.stale.length;
            replica.head = replayedTo(r.info.serverId, last, owed);
            owedNow = replica.head.owed?.length ?? 0;
            await replica.saveHead();
          });
          cursor = last;
          opts.onEvent?.({ type: 'applied', records: records.length, cursor, stale });
          scheduleRetry(owedNow);
        }
      };
      scheduleRetry(stale);
      try {
        for await (const env of r.session.stream(Op.SUBSCRIBE, { journal: { since: cursor, limit: 0 } })) {
          const records = env.journalReply?.records ?? [];
          if (records.length === 0) continue;
          waiting.push(...records);
          if (!applying) applying = drain().catch((e) => { failed = e; r.close(); }).finally(() => { applying = undefined; });
          // Bounded: past this, stop reading and let TCP push back on the server.
          if (waiting.length > 10_000) await applying;
          if (failed !== undefined) throw failed;
          if (stopped()) break;
        }
      } catch (err) {
        // A batch that failed closed the connection to stop the stream: report why it failed, not the close.
        closing = true;
        // Records not applied yet would be fetched through a closed connection: the next catch-up replays them.
        waiting.length = 0;
        await applying;
        throw failed ?? err;
      }
      closing = true;
      await applying;
      if (failed !== undefined) throw failed;
      if (!stopped()) throw new ImzError(Codes.CLOSED, 'cannot follow: the server ended the stream');
    } catch (err) {
      // Before the backoff below: a retry armed earlier must not fire into a closed connection while it waits.
      closing = true;
      if (retryTimer) clearTimeout(retryTimer);
      if (timer) clearInterval(timer);
      // Not held open, idle, through the backoff.
      remote?.close();
      if (stopped()) break;
      const e = err instanceof ImzError ? err : new ImzError(Codes.INTERNAL, (err as Error).message);
      // Not something a retry fixes: a different server, a trimmed journal, a broken replica.
      if (e.code === Codes.IDENTITY || e.code === Codes.CURSOR_GONE || e.code === Codes.NOT_REPLICA || e.code === Codes.CORRUPT) throw e;
      const lagging = e.code === 'IMZ_LAGGING';
      const base = Math.min(maxBackoff, 250 * 2 ** attempt);
      const delay = lagging ? 0 : Math.round(base * (0.5 + Math.random() * 0.5));
      if (!lagging) attempt++;
      opts.onEvent?.({ type: 'disconnected', message: e.message, retryInMs: delay });
      await _sleep(delay, opts.signal);
    } finally {
      closing = true;
      if (timer) clearInterval(timer);
      if (retryTimer) clearTimeout(retryTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      remote?.close();
      // Never return while a batch still holds the replica lock.
      await applying?.catch(() => {});
    }
  }
  return { cursor };
}

/**
 * Asks the server again for the files HEAD owes, under the replica lock, and
 * reconciles those whose record was replayed already; one with a newer record
 * on its way is left to it. Returns how many stay owed.
 */
async function _retryOwed(dir: string, r: Remote, opts: FollowOptions): Promise<number> {
  let fetched = 0;
  let left: string[] = [];
  await withReplicaLock(dir, undefined, async (replica) => {
    const owed = replica.head.owed ?? [];
    if (owed.length === 0) return;
    const targets: Entry[] = [];
    const coming: string[] = [];
    // (Gone there: its removal is replayed or coming.)
    for (const e of await owedEntries(replica, r, owed)) {
      if (e.version > replica.head.cursor) coming.push(e.path);
      else targets.push(e);
    }
    const res = targets.length > 0 ? await reconcile(replica, r, targets, opts.onEvent, opts.policy ?? replica.config.policy ?? 'manual') : { stale: [] as string[] };
    left = [...coming, ...res.stale];
    fetched = targets.length - res.stale.length;
    replica.head = replayedTo(replica.head.serverId, replica.head.cursor, left);
    await replica.saveHead();
  });
  opts.onEvent?.({ type: 'retried', fetched, stale: left.length });
  return left.length;
}

// Waits ms, or less when the signal aborts.
function _sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done);
  });
}
