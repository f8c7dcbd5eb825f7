// Unit tests of core/scan_ahead.ts on real replicas (a server on a copy of
// fixtures/sample, a fresh clone per test; the bundled CLI, dist/imz.js: run
// `npm run build` first): what it hands over while the lstat pass runs, and
// that the scan then takes its hashes instead of reading those files again.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { lstatSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type LocalChange, scanChanges } from '../../core/changes.ts';
import { Replica } from '../../core/replica.ts';
import { ScanAhead } from '../../core/scan_ahead.ts';
import { fsEntryFromStats } from '../../core/tree_scan.ts';
import { cleanupAll, sampleSuiteServer } from '../helpers.ts';

const T = suite('scan ahead');

const suiteServer = sampleSuiteServer('imz-ahead-');
T.before(suiteServer.start);
T.after(cleanupAll);
const cloned = suiteServer.clone;

const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');
const UP_TO = 64;

// New files: small ones in a new directory (nested), in a tracked directory and at the root; one too big to hand
// over, one ignored, one in an ignored directory.
async function addFiles(dir: string): Promise<Record<string, string>> {
  const small: Record<string, string> = { 'fresh/a.txt': 'a\n', 'fresh/deep/er/b.txt': 'b\n', 'docs/new.md': 'new doc\n', 'top.txt': 'top\n', 'fresh/empty.txt': '' };
  await mkdir(join(dir, 'fresh', 'deep', 'er'), { recursive: true });
  await mkdir(join(dir, 'build'), { recursive: true });
  for (const [p, c] of Object.entries(small)) await writeFile(join(dir, p), c);
  await writeFile(join(dir, 'fresh', 'big.bin'), 'x'.repeat(UP_TO + 1));
  await writeFile(join(dir, 'docs', 'scratch.tmp'), 'ignored\n');
  await writeFile(join(dir, 'build', 'out.txt'), 'ignored too\n');
  return small;
}

const fsOf = (dir: string, p: string) => fsEntryFromStats(p, lstatSync(join(dir, p))) as Exclude<ReturnType<typeof fsEntryFromStats>, string>;

T('hands over the small new files where a listing moved and under new directories, not the ignored nor the big; hashOf holds while the file is unchanged', async () => {
  const dir = await cloned();
  const replica = await Replica.open(dir);
  const { cache } = await scanChanges(replica, { keepCache: true }); // listings marked as found clean
  await new Promise((r) => setTimeout(r, 20)); // (directory times move past the marks)
  const small = await addFiles(dir);
  const taken = new Map<string, { hash: string; data: string; n: number }>();
  const ignore = (p: string) => p.endsWith('.tmp') || p === 'build' || p.startsWith('build/');
  const ahead = new ScanAhead(dir, cache, ignore, {
    upTo: UP_TO,
    take: (c: LocalChange, data: Buffer) => {
      const t = taken.get(c.path);
      taken.set(c.path, { hash: c.hash!, data: data.toString(), n: (t?.n ?? 0) + 1 });
    },
  });
  ahead.start();
  await ahead.whenDone();
  assert.equal([...taken.keys()].sort(), Object.keys(small).sort());
  for (const [p, c] of Object.entries(small)) {
    const t = taken.get(p)!;
    assert.equal([t.data, t.hash, t.n], [c, sha(c), 1], p);
    assert.is(ahead.hashOf(fsOf(dir, p)), sha(c), `${p}: unchanged, its hash stands`);
  }
  // Rewritten since (same size, other bytes): its facts moved, and the scan must read it again.
  await writeFile(join(dir, 'top.txt'), 'TOP\n');
  assert.is(ahead.hashOf(fsOf(dir, 'top.txt')), undefined);
  assert.is(ahead.hashOf(fsOf(dir, 'fresh/big.bin')), undefined, 'never hashed here');
});

T('a push-like scan (worker pass, content handed over) takes each new file once, and finds what a plain scan finds', async () => {
  const dir = await cloned();
  const small = await addFiles(dir);
  const was = process.env.IMZ_SCAN_WORKER_MIN;
  process.env.IMZ_SCAN_WORKER_MIN = '0'; // the worker pass, and the look ahead beside it, on a small tree too
  try {
    for (let round = 0; round < 5; round++) {
      const taken = new Map<string, number>();
      const s = await scanChanges(await Replica.open(dir), {
        keepCache: true,
        onContent: { upTo: UP_TO, take: (c: LocalChange) => void taken.set(c.path, (taken.get(c.path) ?? 0) + 1) },
      });
      const plain = await scanChanges(await Replica.open(dir), { keepCache: true });
      const brief = (x: typeof s) => x.changes.map((c) => `${c.kind} ${c.path} ${c.hash ?? ''}`);
      assert.equal(brief(s), brief(plain));
      assert.equal([...taken.keys()].sort(), Object.keys(small).sort(), `round ${round}`);
      assert.ok([...taken.values()].every((k) => k === 1), `each taken once: ${JSON.stringify([...taken])}`);
    }
  } finally {
    if (was === undefined) delete process.env.IMZ_SCAN_WORKER_MIN;
    else process.env.IMZ_SCAN_WORKER_MIN = was;
  }
});

T.run();
