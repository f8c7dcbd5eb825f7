// The node entry (scripts/imz_loader.cjs, built to dist/imz.js): the CLI
// bundle run through V8's code cache. A cache that is damaged, torn, made
// for another build, or cannot be written must never stop or crash the
// CLI; V8 itself checks no checksum in release builds (a damaged cache
// handed to it aborts the process), so the loader's own check is what
// stands between a bad file and a crash.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { VERSION } from '../../core/version.ts';
import { REPO, cleanupAll, makeTmp } from '../helpers.ts';

const T = suite('imz_loader');
T.after(cleanupAll);

const CACHE = 'imz.bundle.v8cache';

/** A private copy of dist/ (the cache file included, as the build primed it). */
async function distCopy(): Promise<string> {
  const d = join(await makeTmp('imz-loader-'), 'dist');
  await cp(join(REPO, 'dist'), d, { recursive: true });
  return d;
}

function version(dist: string, env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(dist, 'imz.js'), '--version'], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function header(dist: string): { key: string; sum: string; data: Buffer } {
  const bytes = readFileSync(join(dist, CACHE));
  const nl = bytes.indexOf(10);
  const line = bytes.toString('latin1', 0, nl);
  const at = line.lastIndexOf(' ');
  return { key: line.slice(0, at), sum: line.slice(at + 1), data: bytes.subarray(nl + 1) };
}

/** The build id the loader was given (the first 16 hex digits of the bundle's SHA-256). */
function buildId(dist: string): string {
  const m = /const BUILD = '([0-9a-f]{16})'/.exec(readFileSync(join(dist, 'imz.js'), 'utf8'));
  assert.ok(m, 'dist/imz.js names its build');
  return m![1]!;
}

function assertValidCache(dist: string, what: string): void {
  const h = header(dist);
  assert.ok(h.key.includes(` ${buildId(dist)} `), `${what}: the cache is for this build (${h.key})`);
  assert.ok(h.key.endsWith(` ${process.version} ${process.arch}`), `${what}: the cache is for this node (${h.key})`);
  assert.is(h.sum, `crc32:${zlib.crc32(h.data).toString(16)}`, `${what}: the cache's checksum matches its bytes`);
  assert.ok(h.data.length > 10_000, `${what}: the cache holds compiled code (${h.data.length} bytes)`);
}

const leftovers = (dist: string) => readdirSync(dist).filter((n) => n.endsWith('.tmp'));

T('the build primes the cache for this node, and a run leaves it as it is', async () => {
  const dist = await distCopy();
  assertValidCache(dist, 'as built');
  const before = readFileSync(join(dist, CACHE));
  const r = version(dist);
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trim(), VERSION);
  assert.ok(readFileSync(join(dist, CACHE)).equals(before), 'a cache that was used is not written again');
});

T('a damaged or torn cache is never handed to V8: the CLI runs, and writes a good one', async () => {
  const dist = await distCopy();
  const good = readFileSync(join(dist, CACHE));
  const nl = good.indexOf(10);
  const damaged = Buffer.from(good);
  for (let i = nl + 1 + 4096; i < nl + 1 + 8192; i++) damaged[i] = damaged[i]! ^ 0x5a; // bytecode turned to noise, the header as it was
  const cases: Array<[string, Buffer]> = [
    ['damaged', damaged],
    ['torn', good.subarray(0, Math.floor(good.length / 2))],
    ['header only', good.subarray(0, nl + 1)],
    ['no header', good.subarray(nl + 1)],
    ['empty', Buffer.alloc(0)],
  ];
  for (const [what, bytes] of cases) {
    writeFileSync(join(dist, CACHE), bytes);
    const r = version(dist);
    assert.is(r.code, 0, `${what}: exit ${r.code}\n${r.stderr}`);
    assert.is(r.stdout.trim(), VERSION, what);
    assertValidCache(dist, `after a ${what} cache`);
  }
  assert.equal(leftovers(dist), []);
});

T('a cache for another build, node or arch is not used, even with a good checksum: it is replaced', async () => {
  const dist = await distCopy();
  const h = header(dist);
  const id = buildId(dist);
  for (const key of [h.key.replace(id, '0123456789abcdef'), h.key.replace(process.version, 'v99.0.0'), h.key.replace(` ${process.arch}`, ' arm-9'), `${h.key} extra`]) {
    const sum = `crc32:${zlib.crc32(h.data).toString(16)}`;
    writeFileSync(join(dist, CACHE), Buffer.concat([Buffer.from(`${key} ${sum}\n`, 'latin1'), h.data]));
    const r = version(dist);
    assert.is(r.code, 0, r.stderr);
    assertValidCache(dist, `after one keyed ${key}`);
  }
});

T('no cache and none to be written (the name taken by a directory), or IMZ_NO_CODE_CACHE: the CLI runs all the same', async () => {
  const dist = await distCopy();
  rmSync(join(dist, CACHE));
  mkdirSync(join(dist, CACHE));
  const r = version(dist);
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trim(), VERSION);
  assert.equal(leftovers(dist), [], 'the unwritable cache leaves no temp file behind');
  rmSync(join(dist, CACHE), { recursive: true });
  const off = version(dist, { IMZ_NO_CODE_CACHE: '1' });
  assert.is(off.code, 0, off.stderr);
  assert.is(existsSync(join(dist, CACHE)), false, 'IMZ_NO_CODE_CACHE writes none');
  const on = version(dist);
  assert.is(on.code, 0, on.stderr);
  assertValidCache(dist, 'written by the first run that may');
});

T.run();
