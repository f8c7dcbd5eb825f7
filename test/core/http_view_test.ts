// The read-only HTTP view (core/http_view.ts) on an in-process ImzServer,
// spoken to with node:http (raw request targets: fetch would normalise
// '..' and '%2e%2e' away before they reach the server). The watcher's
// debounce is set far out, so the table only moves when a test scans:
// that makes "changed on disk, table not yet updated" deterministic.
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { mkdir, stat, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type HttpView, contentTypeOf, parseRange, parseTarget, startHttpView } from '../../core/http_view.ts';
import { ImzServer } from '../../core/server.ts';
import { type HttpReply, cleanupAll, httpRequest, makeTmp } from '../helpers.ts';

let server: ImzServer;
let view: HttpView;
let srv = '';
const big = Buffer.from(new Uint8Array(300 * 1024 + 7).map((_, i) => (i * 13 + 5) & 0xff));
const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

type Reply = HttpReply;

/** One request over a fresh connection, target sent as given. */
function http(method: string, path: string, headers: Record<string, string> = {}): Promise<Reply> {
  return httpRequest(view.port, method, path, headers);
}

test.before(async () => {
  const tmp = await makeTmp('imz-http-view-');
  srv = join(tmp, 'srv');
  await mkdir(join(srv, 'dir/sub'), { recursive: true });
  await mkdir(join(tmp, 'outside'));
  await writeFile(join(tmp, 'outside/secret'), 'TOP SECRET');
  await writeFile(join(srv, 'dir/a.txt'), 'alpha');
  await writeFile(join(srv, 'dir/b.json'), '{"b":1}');
  await writeFile(join(srv, 'big.bin'), big);
  await writeFile(join(srv, 'empty.txt'), '');
  await writeFile(join(srv, 'weird <&> "q".txt'), 'weird');
  await writeFile(join(srv, 'stale.txt'), 'old content');
  await writeFile(join(srv, 'same.txt'), 'AAAA');
  await utimes(join(srv, 'same.txt'), 1_700_000_000, 1_700_000_000);
  await writeFile(join(srv, 'same-big.bin'), big);
  await utimes(join(srv, 'same-big.bin'), 1_700_000_000, 1_700_000_000);
  await writeFile(join(srv, 'huge.bin'), '');
  await truncate(join(srv, 'huge.bin'), 32 * 1024 * 1024);
  await symlink('dir/a.txt', join(srv, 'alias.txt'));
  await symlink('dir', join(srv, 'alias-dir'));
  await symlink('../outside/secret', join(srv, 'up'));
  await symlink('../outside', join(srv, 'linkdir'));
  await symlink('/etc/passwd', join(srv, 'abs'));
  server = new ImzServer({ dir: srv, rescanMs: 0, debounceMs: 600_000 });
  await server.start();
  view = await startHttpView(server, { port: 0 });
});
test.after(async () => {
  await view?.close();
  await server?.close();
  await cleanupAll();
});

test('parseTarget decodes per segment and refuses unsafe paths', () => {
  assert.equal(parseTarget('/'), { ok: true, path: '', slash: true, query: new URLSearchParams() });
  const t = parseTarget('/a%20b/c%3F.txt?format=json');
  assert.ok(t.ok && t.path === 'a b/c?.txt' && !t.slash && t.query.get('format') === 'json');
  assert.ok(parseTarget('/dir/').ok);
  for (const bad of ['/../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/a/..%2f..%2fx', '/%00', '//etc/passwd', '/a//b', '/./a', '/a/%2E', '/%ff', 'http://x/a', '*', '/a%2Fb']) {
    const r = parseTarget(bad);
    assert.ok(!r.ok && (r.status === 400 || r.status === 404), bad);
  }
  for (const reserved of ['/.imz-server/identity', '/.imz/config', '/a/.imz-tmp-1']) {
    const r = parseTarget(reserved);
    assert.ok(!r.ok && r.status === 404, reserved);
  }
});

test('parseRange: single ranges, suffixes, open ends; unsatisfiable; multi-range ignored', () => {
  assert.equal(parseRange('bytes=0-3', 10), { start: 0, end: 3 });
  assert.equal(parseRange('bytes=4-', 10), { start: 4, end: 9 });
  assert.equal(parseRange('bytes=-3', 10), { start: 7, end: 9 });
  assert.equal(parseRange('bytes=-30', 10), { start: 0, end: 9 });
  assert.equal(parseRange('bytes=5-100', 10), { start: 5, end: 9 });
  assert.is(parseRange('bytes=10-', 10), 'unsatisfiable');
  assert.is(parseRange('bytes=-0', 10), 'unsatisfiable');
  assert.is(parseRange('bytes=-1', 0), 'unsatisfiable');
  assert.is(parseRange('bytes=0-1,3-4', 10), undefined);
  assert.is(parseRange('bytes=5-2', 10), undefined);
  assert.is(parseRange('items=0-1', 10), undefined);
  assert.is(parseRange('bytes=-', 10), undefined);
  assert.is(contentTypeOf('x/y.JSON'), 'application/json');
  assert.is(contentTypeOf('noext'), 'application/octet-stream');
  assert.is(contentTypeOf('.bashrc'), 'application/octet-stream');
});

test('GET a file: body and headers; HEAD: same headers, no body', async () => {
  const r = await http('GET', '/dir/a.txt');
  assert.is(r.status, 200);
  assert.is(r.body.toString(), 'alpha');
  assert.is(r.headers['content-length'], '5');
  assert.is(r.headers['content-type'], 'text/plain; charset=utf-8');
  assert.is(r.headers.etag, `"${sha('alpha')}"`);
  assert.is(r.headers['accept-ranges'], 'bytes');
  assert.is(r.headers['last-modified'], new Date((await stat(join(srv, 'dir/a.txt'))).mtimeMs).toUTCString());
  const h = await http('HEAD', '/dir/a.txt');
  assert.is(h.status, 200);
  assert.is(h.body.length, 0);
  for (const k of ['content-length', 'content-type', 'etag', 'last-modified', 'accept-ranges']) assert.is(h.headers[k], r.headers[k], k);
  assert.is((await http('GET', '/dir/b.json')).headers['content-type'], 'application/json');
  const e = await http('GET', '/empty.txt');
  assert.is(e.status, 200);
  assert.is(e.headers['content-length'], '0');
  assert.is(e.headers.etag, `"${sha('')}"`);
});

test('GET a file larger than one chunk streams it whole', async () => {
  const r = await http('GET', '/big.bin');
  assert.is(r.status, 200);
  assert.ok(r.complete);
  assert.is(r.body.length, big.length);
  assert.ok(r.body.equals(big));
  assert.is(r.headers['content-type'], 'application/octet-stream');
  assert.is(r.headers.etag, `"${sha(big)}"`);
});

test('Range: first bytes, suffix, open-ended, clamped, unsatisfiable, multi-range, If-Range', async () => {
  const first = await http('GET', '/dir/a.txt', { Range: 'bytes=0-3' });
  assert.is(first.status, 206);
  assert.is(first.body.toString(), 'alph');
  assert.is(first.headers['content-range'], 'bytes 0-3/5');
  assert.is(first.headers['content-length'], '4');
  const suffix = await http('GET', '/dir/a.txt', { Range: 'bytes=-3' });
  assert.is(suffix.status, 206);
  assert.is(suffix.body.toString(), 'pha');
  assert.is(suffix.headers['content-range'], 'bytes 2-4/5');
  const open = await http('GET', '/dir/a.txt', { Range: 'bytes=1-' });
  assert.is(open.body.toString(), 'lpha');
  const clamped = await http('GET', '/dir/a.txt', { Range: 'bytes=3-999' });
  assert.is(clamped.headers['content-range'], 'bytes 3-4/5');
  const mid = await http('GET', '/big.bin', { Range: 'bytes=100000-250000' });
  assert.is(mid.status, 206);
  assert.ok(mid.body.equals(big.subarray(100000, 250001)));
  const un = await http('GET', '/dir/a.txt', { Range: 'bytes=5-' });
  assert.is(un.status, 416);
  assert.is(un.headers['content-range'], 'bytes */5');
  assert.is((await http('GET', '/empty.txt', { Range: 'bytes=-1' })).status, 416);
  const multi = await http('GET', '/dir/a.txt', { Range: 'bytes=0-1,3-4' });
  assert.is(multi.status, 200);
  assert.is(multi.body.toString(), 'alpha');
  const ifRangeOld = await http('GET', '/dir/a.txt', { Range: 'bytes=0-1', 'If-Range': '"0000"' });
  assert.is(ifRangeOld.status, 200);
  const ifRangeNow = await http('GET', '/dir/a.txt', { Range: 'bytes=0-1', 'If-Range': `"${sha('alpha')}"` });
  assert.is(ifRangeNow.status, 206);
  const headRange = await http('HEAD', '/dir/a.txt', { Range: 'bytes=0-1' });
  assert.is(headRange.status, 206);
  assert.is(headRange.body.length, 0);
});

test('If-None-Match and If-Modified-Since answer 304', async () => {
  const tag = `"${sha('alpha')}"`;
  for (const inm of [tag, `W/${tag}`, `"nope", ${tag}`, '*']) {
    const r = await http('GET', '/dir/a.txt', { 'If-None-Match': inm });
    assert.is(r.status, 304, inm);
    assert.is(r.body.length, 0);
    assert.is(r.headers.etag, tag);
  }
  assert.is((await http('GET', '/dir/a.txt', { 'If-None-Match': '"other"' })).status, 200);
  assert.is((await http('GET', '/dir/a.txt', { 'If-Modified-Since': new Date(Date.now() + 60_000).toUTCString() })).status, 304);
  assert.is((await http('GET', '/dir/a.txt', { 'If-Modified-Since': new Date(0).toUTCString() })).status, 200);
});

test('directories: HTML listing with escaped names, JSON by Accept or ?format=json, 301 without the slash', async () => {
  const html = await http('GET', '/');
  assert.is(html.status, 200);
  assert.match(String(html.headers['content-type']), /^text\/html/);
  const page = html.body.toString();
  assert.ok(page.includes('weird &#60;&#38;&#62; &#34;q&#34;.txt'), page);
  assert.ok(!page.includes('<&>'));
  assert.ok(page.includes('href="./weird%20%3C%26%3E%20%22q%22.txt"'));
  assert.ok(page.includes('href="./dir/"'));
  assert.ok(!page.includes('.imz-server'));
  const sub = (await http('GET', '/dir/')).body.toString();
  assert.ok(sub.includes('href="../"') && sub.includes('href="./a.txt"') && sub.includes('href="./sub/"'));
  for (const [path, headers] of [['/dir/', { Accept: 'application/json' }], ['/dir/?format=json', {}]] as const) {
    const r = await http('GET', path, headers);
    assert.is(r.status, 200);
    assert.is(r.headers['content-type'], 'application/json');
    const j = JSON.parse(r.body.toString());
    assert.is(j.path, 'dir');
    assert.equal(j.entries.map((e: { name: string }) => e.name), ['a.txt', 'b.json', 'sub']);
    const a = j.entries[0];
    assert.equal(Object.keys(a).sort(), ['hash', 'mtimeMs', 'name', 'size', 'type', 'version']);
    assert.is(a.type, 'file');
    assert.is(a.size, 5);
    assert.is(a.hash, sha('alpha'));
    assert.ok(a.version > 0);
    assert.is(j.entries[2].type, 'dir');
    assert.is(j.entries[2].hash, null);
  }
  const root = JSON.parse((await http('GET', '/?format=json')).body.toString());
  assert.is(root.path, '');
  const names = root.entries.map((e: { name: string }) => e.name);
  assert.ok(names.includes('alias.txt') && !names.includes('.imz-server'), names.join());
  const up = root.entries.find((e: { name: string }) => e.name === 'up');
  assert.is(up.type, 'symlink');
  assert.is(up.target, '../outside/secret');
  assert.is(up.hash, null);
  const redirect = await http('GET', '/dir?format=json');
  assert.is(redirect.status, 301);
  assert.is(redirect.headers.location, '/dir/?format=json');
  assert.is((await http('GET', '/dir/sub')).headers.location, '/dir/sub/');
  assert.is((await http('GET', '/dir/a.txt/')).status, 404);
  const head = await http('HEAD', '/dir/');
  assert.is(head.status, 200);
  assert.is(head.body.length, 0);
});

test('unknown paths 404; other methods 405 with Allow', async () => {
  assert.is((await http('GET', '/nope')).status, 404);
  assert.is((await http('GET', '/dir/nope/')).status, 404);
  for (const m of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
    const r = await http(m, '/dir/a.txt');
    assert.is(r.status, 405, m);
    assert.is(r.headers.allow, 'GET, HEAD');
  }
});

test('traversal, encoded tricks, reserved names and escaping symlinks serve nothing outside', async () => {
  for (const p of ['/../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/.imz-server/identity', '/.imz-server/', '/a/..%2f..%2fx', '/%00', '/dir/%00a.txt',
    '//etc/passwd', '/dir//a.txt', '/dir/./a.txt', '/%2e%2e%2f%2e%2e%2fetc%2fpasswd', '/..%5c..%5cetc%5cpasswd', '/up', '/linkdir/secret', '/linkdir/', '/abs', '/dir/%2e%2e/%2e%2e/outside/secret']) {
    const r = await http('GET', p);
    assert.ok(r.status === 400 || r.status === 404, `${p}: ${r.status}`);
    const body = r.body.toString();
    assert.ok(!body.includes('TOP SECRET') && !body.includes('root:'), p);
  }
  const alias = await http('GET', '/alias.txt');
  assert.is(alias.status, 302);
  assert.is(alias.headers.location, '/dir/a.txt');
  assert.is((await http('GET', '/alias-dir')).headers.location, '/dir/');
});

test('a foreign Host (DNS rebinding) is refused on loopback', async () => {
  assert.is((await http('GET', '/dir/a.txt', { Host: 'evil.example' })).status, 421);
  assert.is((await http('GET', '/dir/a.txt', { Host: `localhost:${view.port}` })).status, 200);
  assert.is((await http('GET', '/dir/a.txt', { Host: `127.0.0.1:${view.port}` })).status, 200);
});

test('a file changed on disk but not yet rescanned is never served as the old version', async () => {
  const oldTag = `"${sha('old content')}"`;
  assert.is((await http('GET', '/stale.txt')).headers.etag, oldTag);
  await writeFile(join(srv, 'stale.txt'), 'brand new content');
  for (const [m, h] of [['GET', {}], ['HEAD', {}], ['GET', { Range: 'bytes=0-2' }], ['GET', { 'If-None-Match': oldTag }]] as const) {
    const r = await http(m, '/stale.txt', h);
    assert.is(r.status, 503, `${m} ${JSON.stringify(h)}`);
    assert.is(r.headers['retry-after'], '1');
    assert.ok(!r.body.toString().includes('brand new'));
  }
  // Same size, same mtime, same inode, other bytes: only the hash can tell,
  // and the body is cut before its last byte instead of completing.
  await writeFile(join(srv, 'same.txt'), 'BBBB');
  await utimes(join(srv, 'same.txt'), 1_700_000_000, 1_700_000_000);
  // (Small enough to be one chunk: nothing, headers included, was sent, so the client sees a hang-up.)
  const r = await http('GET', '/same.txt').catch((err: Error) => err);
  if (!(r instanceof Error)) {
    assert.not.ok(r.complete);
    assert.is.not(r.body.toString(), 'BBBB');
  }
  // Larger than a chunk: headers and the first chunks went out, the last one never does.
  const flipped = Buffer.from(big);
  flipped[flipped.length - 1] ^= 0xff;
  await writeFile(join(srv, 'same-big.bin'), flipped);
  await utimes(join(srv, 'same-big.bin'), 1_700_000_000, 1_700_000_000);
  const cut = await http('GET', '/same-big.bin');
  assert.is(cut.status, 200);
  assert.is(cut.headers.etag, `"${sha(big)}"`);
  assert.not.ok(cut.complete);
  assert.ok(cut.body.length < big.length, String(cut.body.length));
  // After the scan, the new versions are served with their own ETags.
  await server.scanner.scan('');
  const now = await http('GET', '/stale.txt');
  assert.is(now.status, 200);
  assert.is(now.body.toString(), 'brand new content');
  assert.is(now.headers.etag, `"${sha('brand new content')}"`);
});

test('a file written later appears once the scanner has seen it', async () => {
  await writeFile(join(srv, 'dir/later.txt'), 'later');
  assert.is((await http('GET', '/dir/later.txt')).status, 404);
  await server.scanner.scan('');
  const r = await http('GET', '/dir/later.txt');
  assert.is(r.status, 200);
  assert.is(r.body.toString(), 'later');
  const j = JSON.parse((await http('GET', '/dir/?format=json')).body.toString());
  assert.ok(j.entries.some((e: { name: string }) => e.name === 'later.txt'));
});

test('close() cuts a download whose reader stalled and returns promptly', async () => {
  const other = await startHttpView(server, { port: 0 });
  const got = await new Promise<{ status: number; done: Promise<boolean>; resume: () => void }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: other.port, path: '/huge.bin', agent: false }, (res) => {
      res.pause(); // never read: the server's writes back up
      res.on('error', () => {});
      // Resumed only after close(), to drain what was buffered and see how it ended.
      resolve({ status: res.statusCode ?? 0, done: new Promise((r) => { res.on('close', () => r(res.complete)); }), resume: () => res.resume() });
    });
    req.on('error', reject);
    req.end();
  });
  assert.is(got.status, 200);
  await new Promise((r) => setTimeout(r, 100));
  const t0 = Date.now();
  await other.close();
  assert.ok(Date.now() - t0 < 2000, `close took ${Date.now() - t0} ms`);
  got.resume();
  assert.is(await got.done, false);
});

test('refuses a non-loopback host without insecure', async () => {
  try {
    await startHttpView(server, { port: 0, host: '0.0.0.0' });
    assert.unreachable('started');
  } catch (err) {
    assert.is((err as { code: string }).code, 'IMZ_USAGE');
  }
});

test.run();
