// Shared pieces of the fault tests (crash rounds, full disk, permissions):
// the server's journal replayed into a tree to compare with the served
// directory, and small tmpfs mounts (a real full disk) that are always
// unmounted, even when the test process dies.
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdirSync, statSync, truncateSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { FrameDecoder } from '../protocol/frame_codec.ts';
import { decodeEnvelope } from '../protocol/messages.ts';
import { type SnapEntry, snapshotTree, waitFor } from './helpers.ts';

/** Entry types of the wire (protocol/messages.ts EntryType). */
const TYPE_NAMES: Record<number, SnapEntry['type']> = { 1: 'file', 2: 'dir', 3: 'symlink' };

/**
 * The tree the server's journal describes: every record from the first, in
 * order, each one setting (or, type NONE, removing) its path. Read with a
 * JOURNAL request, as `imz pull` replays it.
 */
export async function journalTree(address: string): Promise<{ tree: Record<string, SnapEntry>; last: number; seqs: Map<number, string> }> {
  const { Remote } = await import('../core/remote.ts');
  const remote = await Remote.connect(address, { timeoutMs: 5_000 });
  const tree: Record<string, SnapEntry> = {};
  const seqs = new Map<number, string>();
  let last = 0;
  try {
    for await (const batch of remote.journal(0)) {
      for (const r of batch) {
        const e = r.entry;
        seqs.set(Number(r.seq), `${e.path} ${r.change} ${Buffer.from(e.hash).toString('hex').slice(0, 16)}`);
        last = Math.max(last, Number(r.seq));
        const type = TYPE_NAMES[e.type];
        if (!type) {
          delete tree[e.path];
          continue;
        }
        const mode = e.mode & 0o777;
        if (type === 'file') tree[e.path] = { type, mode, size: Number(e.size), sha256: Buffer.from(e.hash).toString('hex'), mtimeMs: Math.trunc(Number(e.mtimeMs)) };
        else if (type === 'symlink') tree[e.path] = { type, mode, target: e.target };
        else tree[e.path] = { type, mode };
      }
    }
  } finally {
    remote.close();
  }
  return { tree, last, seqs };
}

/** Lines saying how the journal's tree and the served directory differ (empty when they agree). */
export async function journalVsTree(address: string, dir: string): Promise<string[]> {
  const [{ tree }, disk] = await Promise.all([journalTree(address), snapshotTree(dir)]);
  const lines: string[] = [];
  for (const p of new Set([...Object.keys(tree), ...Object.keys(disk)])) {
    const a = tree[p];
    const b = disk[p];
    // Symlink modes are whatever the platform gives; the journal keeps the link's own.
    const norm = (e: SnapEntry | undefined) => (e ? JSON.stringify({ ...e, mode: e.type === 'symlink' ? 0 : e.mode }) : 'absent');
    if (norm(a) !== norm(b)) lines.push(`${p}: journal ${norm(a)} / tree ${norm(b)}`);
  }
  return lines.sort();
}

/**
 * Waits until the served directory is what the journal says (the server's
 * watcher and scans journal direct writes within a moment); throws with the
 * differences after timeoutMs.
 */
export async function waitJournalMatchesTree(address: string, dir: string, timeoutMs = 10_000): Promise<void> {
  let diff: string[] = [];
  try {
    await waitFor(async () => (diff = await journalVsTree(address, dir)).length === 0, timeoutMs, 'the journal to describe the served tree', 100);
  } catch {
    throw new Error(`the server's journal does not describe its tree after ${timeoutMs} ms:\n  ${diff.slice(0, 40).join('\n  ')}`);
  }
}

// ---------- tmpfs mounts ----------

const mounted: string[] = [];

/**
 * Mounts a tmpfs of `size` (e.g. '2m') on dir (made if missing). Returns
 * false when this process may not mount (not root, no CAP_SYS_ADMIN).
 */
export function mountTmpfs(dir: string, size: string): boolean {
  return _mount(dir, [['mount', '-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir]]);
}

/**
 * Mounts a new ext4 file system of `size` (e.g. '12M'), made in an image
 * file beside dir, on dir through a loop device: a small real disk, where
 * an fsync does I/O (unlike a tmpfs). False when this process may not.
 */
export function mountExt4(dir: string, size: string): boolean {
  const image = `${dir}.ext4`;
  return _mount(dir, [['truncate', '-s', size, image], ['mkfs.ext4', '-q', '-F', image], ['mount', '-o', 'loop', image, dir]]);
}

// Makes dir, runs the commands that mount something on it, and remembers it for unmountAll; false if one fails.
function _mount(dir: string, commands: string[][]): boolean {
  mkdirSync(dir, { recursive: true });
  try {
    for (const [cmd, ...args] of commands) execFileSync(cmd!, args, { stdio: 'pipe' });
  } catch {
    return false;
  }
  mounted.push(dir);
  return true;
}

/** Changes the size of a tmpfs mounted by mountTmpfs. */
export function resizeTmpfs(dir: string, size: string): void {
  execFileSync('mount', ['-o', `remount,size=${size}`, dir], { stdio: 'pipe' });
}

/**
 * Unmounts everything mountTmpfs mounted (lazily if it is still busy).
 * Call it after the processes using the mounts are stopped and before the
 * temp dirs are removed.
 */
export function unmountAll(): void {
  for (const d of mounted.splice(0).reverse()) {
    try {
      execFileSync('umount', [d], { stdio: 'pipe' });
    } catch {
      try {
        execFileSync('umount', ['-l', d], { stdio: 'pipe' });
      } catch { /* already gone */ }
    }
  }
}

process.once('exit', unmountAll);

/**
 * Shrinks (or grows) a tmpfs so that exactly `leave` bytes (rounded up to
 * whole pages) are free: the disk is full for anything bigger.
 */
export function leaveFree(dir: string, leave: number): void {
  const used = Number(execFileSync('df', ['-B1', '--output=used', dir], { encoding: 'utf8' }).trim().split('\n').pop());
  resizeTmpfs(dir, String(used + Math.ceil(leave / 4096) * 4096));
}

/**
 * Fills the file system holding dir with file (appending until ENOSPC),
 * then gives back `leave` bytes (whole pages), so a write of more fails.
 */
export function fillDisk(file: string, leave = 0): void {
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  let piece = chunk;
  for (;;) {
    try {
      appendFileSync(file, piece);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      if (piece.length <= 4096) break;
      piece = piece.subarray(0, piece.length / 2); // fill the last pages too
    }
  }
  if (leave > 0) truncateSync(file, Math.max(0, statSync(file).size - Math.ceil(leave / 4096) * 4096));
}

/** Free bytes on the file system holding dir. */
export function freeBytes(dir: string): number {
  const out = execFileSync('df', ['-B1', '--output=avail', dir], { encoding: 'utf8' });
  return Number(out.trim().split('\n').pop());
}

/** A proxy in front of a server that counts the requests its clients send, by op. */
export interface CountingProxy {
  address: string;
  /** How many requests of this op went through. */
  count(op: number): number;
  close(): Promise<void>;
}

/**
 * Forwards every byte both ways between clients and 127.0.0.1:`port`, and
 * decodes the frames clients send: what a client asked for is then counted,
 * not guessed from how long it took.
 */
export async function countingProxy(port: number): Promise<CountingProxy> {
  const counts = new Map<number, number>();
  const sockets = new Set<Socket>();
  const srv: Server = createServer((c) => {
    const u = connect(port, '127.0.0.1');
    sockets.add(c).add(u);
    const frames = new FrameDecoder();
    c.on('data', (d: Buffer) => {
      for (const f of frames.push(d)) {
        const env = decodeEnvelope(f);
        if (!env.reply) counts.set(env.op, (counts.get(env.op) ?? 0) + 1);
      }
      u.write(d);
    });
    u.pipe(c);
    for (const s of [c, u]) s.on('error', () => { c.destroy(); u.destroy(); });
    c.on('close', () => u.destroy());
    u.on('close', () => c.destroy());
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return {
    address: `127.0.0.1:${(srv.address() as { port: number }).port}`,
    count: (op) => counts.get(op) ?? 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}
