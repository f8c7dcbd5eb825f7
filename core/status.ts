import { Codes, ImzError } from '../protocol/errors.ts';
import { type LocalChange, scanChanges } from './changes.ts';
import { type ConflictRecord, listConflicts } from './conflicts.ts';
import type { SecurityOptions } from './credentials.ts';
import type { Remote } from './remote.ts';
import { Replica } from './replica.ts';
import type { SkippedPath } from './tree_scan.ts';

/** What the server said (or that it could not be asked). */
export interface ServerStatus {
  reachable: boolean;
  address: string;
  /** Journal records the replica has not replayed yet (when reachable and the same server). */
  behind?: number;
  serverId?: string;
  /** Why behind is missing: unreachable, a different server, or a journal trimmed past the cursor. */
  error?: string;
  /** True when the server was not asked (offline option). */
  skipped?: boolean;
  /** The server is a mirror: what it mirrors, and whether it follows it now. */
  upstream?: { address: string; reachable: boolean };
  /** Why it could not be asked (an error code), when it could not. */
  code?: string;
  /** What this replica may do there. */
  access?: 'read-write' | 'read-only';
}

/** Everything `imz status` reports. */
export interface StatusReport {
  root: string;
  changes: LocalChange[];
  skipped: SkippedPath[];
  conflicts: ConflictRecord[];
  /** Conflict records that do not read as records (damaged), relative to .imz/: left out of conflicts. */
  damagedConflicts: string[];
  server: ServerStatus;
  /** The journal cursor in HEAD. */
  cursor: number;
  /** True while the clone that made this replica has not finished. */
  cloning: boolean;
  /** Files a pull could not fetch yet (they kept changing on the server): the next pull asks for them again. */
  owed: string[];
  /** Index entries that are files, and how many of them were deleted. */
  tracked: number;
  deleted: number;
}

/** Options of status. */
export interface StatusOptions {
  /** How long to wait for the server's HELLO (default 2 s). */
  timeoutMs?: number;
  /** Token and TLS settings from the command line (over those saved at clone). */
  security?: SecurityOptions;
  /** Do not contact the server. */
  offline?: boolean;
  onProgress?: (scanned: number) => void;
}

/**
 * Local changes (a stat walk; hashing only what stat cannot settle),
 * recorded conflicts, and how far the replica is behind its server. The
 * server is asked in parallel with the scan; an unreachable server is a
 * fact of the report, not an error. Read-only: no lock, nothing written.
 */
export async function status(dir: string, opts: StatusOptions = {}): Promise<StatusReport> {
  const replica = await Replica.open(dir);
  const address = replica.config.remote;
  const serverP: Promise<ServerStatus> = opts.offline
    ? Promise.resolve({ reachable: false, address, skipped: true })
    : _askServer(replica, opts.timeoutMs ?? 2_000, opts.security);
  // Keep a rejected server promise from counting as unhandled while the scan runs.
  serverP.catch(() => undefined);
  const damagedConflicts: string[] = [];
  const [scan, conflicts] = await Promise.all([
    scanChanges(replica, { onProgress: opts.onProgress, contentHashes: false }),
    listConflicts(replica.stateDir, damagedConflicts),
  ]);
  return {
    root: replica.root, changes: scan.changes, skipped: scan.skipped, conflicts, damagedConflicts, server: await serverP, cursor: replica.head.cursor,
    cloning: replica.head.cloning === true, owed: replica.head.owed ?? [],
    tracked: scan.tracked, deleted: scan.deleted,
  };
}

async function _askServer(replica: Replica, timeoutMs: number, security: SecurityOptions | undefined): Promise<ServerStatus> {
  const address = replica.config.remote;
  let remote: Remote;
  try {
    // Loaded here, not with status: the protocol's codec then loads while the scan waits for its worker, not before the scan.
    const { connectReplica } = await import('./credentials.ts');
    remote = await connectReplica(replica, security, { timeoutMs });
  } catch (err) {
    return { reachable: false, address, error: err instanceof ImzError ? err.message : String((err as Error)?.message ?? err), code: err instanceof ImzError ? err.code : Codes.INTERNAL };
  }
  try {
    const info = remote.info;
    const head = replica.head;
    const s: ServerStatus = { reachable: true, address, serverId: info.serverId, access: info.access, ...(info.upstream ? { upstream: info.upstream } : {}) };
    if (head.serverId && info.serverId !== head.serverId) {
      s.error = `the server at ${address} is not the one this replica follows (it is ${info.serverId}, the replica follows ${head.serverId}); \`imz pull --resync\` compares by hash`;
    } else if (info.journalFirst > 0 && head.cursor + 1 < info.journalFirst) {
      s.error = `the server's journal starts at record ${info.journalFirst} but this replica stopped at ${head.cursor}; \`imz pull --resync\` compares by hash`;
    } else {
      s.behind = Math.max(0, info.journalLast - head.cursor);
    }
    return s;
  } finally {
    remote.close();
  }
}
