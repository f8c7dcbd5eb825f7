import { type ChildProcess, spawn } from 'node:child_process';
import { statfsSync } from 'node:fs';
import { release } from 'node:os';

// Node has no syncfs(2): a long-lived shell runs `sync -f` (coreutils) for
// it, one directory a line, answering "ok" or "no". One fork a call, not a
// child process started each time.
let _sh: ChildProcess | undefined;
let _waiting: ((ok: boolean) => void)[] = [];
let _out = '';
// Once it failed (no shell, no `sync -f`, an error), callers fsync each file for the life of the process.
let _unavailable = process.platform !== 'linux' || !_reportsErrors(release());

// Local disk file systems (statfs f_type), where a syncfs writes everything an fsync of each file would: not
// network or FUSE ones, whose fsync sends the server a request that a syncfs does not.
const _LOCAL = new Set([0xef53 /* ext2/3/4 */, 0x58465342 /* xfs */, 0x9123683e /* btrfs */, 0xf2f52010 /* f2fs */, 0x2fc12fc1 /* zfs */]);

// Linux 5.8 and later report a write-back error to syncfs (one not yet seen by anyone); earlier kernels report none.
function _reportsErrors(rel: string): boolean {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  return m !== null && (Number(m[1]) > 5 || (Number(m[1]) === 5 && Number(m[2]) >= 8));
}

/** Whether syncFs can stand for an fsync of each file written on dir's file system (a local disk, Linux 5.8+). */
export function syncFsUsable(dir: string): boolean {
  if (_unavailable) return false;
  try {
    return _LOCAL.has(statfsSync(dir).type);
  } catch {
    return false;
  }
}

function _fail(): void {
  _unavailable = true;
  _sh = undefined;
  const w = _waiting;
  _waiting = [];
  for (const r of w) r(false);
}

function _start(): ChildProcess | undefined {
  let sh: ChildProcess;
  try {
    sh = spawn('sh', ['-c', 'while IFS= read -r p; do if sync -f -- "$p" >/dev/null 2>&1; then echo ok; else echo no; fi; done'], { stdio: ['pipe', 'pipe', 'ignore'] });
  } catch {
    return undefined;
  }
  if (!sh.stdin || !sh.stdout) {
    sh.kill();
    return undefined;
  }
  sh.on('error', _fail);
  sh.on('exit', _fail);
  sh.stdin.on('error', _fail);
  sh.stdout.on('error', _fail);
  sh.stdout.setEncoding('utf8');
  sh.stdout.on('data', (d: string) => {
    _out += d;
    for (let i = _out.indexOf('\n'); i >= 0; i = _out.indexOf('\n')) {
      const ok = _out.slice(0, i) === 'ok';
      _out = _out.slice(i + 1);
      if (!ok) _unavailable = true;
      _waiting.shift()?.(ok);
      if (_waiting.length === 0) sh.unref();
    }
  });
  // The helper keeps the process alive only while a call waits on it; it ends when its stdin closes with the process.
  sh.unref();
  (sh.stdin as unknown as { unref?: () => void }).unref?.();
  (sh.stdout as unknown as { unref?: () => void }).unref?.();
  return sh;
}

/**
 * Makes everything written on dir's file system durable (syncfs(2)): one
 * call for thousands of new files, where an fsync each writes the same
 * inode-table and directory blocks over and over. False when it could not
 * (the caller then fsyncs each file itself). See syncFsUsable.
 */
export function syncFs(dir: string): Promise<boolean> {
  if (_unavailable || dir.includes('\n')) return Promise.resolve(false);
  _sh ??= _start();
  const sh = _sh;
  if (sh === undefined) {
    _unavailable = true;
    return Promise.resolve(false);
  }
  return new Promise((res) => {
    if (_waiting.length === 0) sh.ref();
    _waiting.push(res);
    sh.stdin!.write(`${dir}\n`);
  });
}
