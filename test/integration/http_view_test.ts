// The read-only HTTP view of the real CLI (`imz serve DIR --port 0 --http 0
// --json`, the bundled dist/imz.js: run `npm run build` first) spoken to
// with node:http, raw request targets (fetch would normalise '..' away):
// files with their headers, HEAD, ranges, 304, listings, redirects, refused
// methods and paths, a file changed on disk, a file written later, the
// options' rules (loopback only unless --insecure) and a clean shutdown.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type HttpReply, type ServerHandle, cleanupAll, httpRequest, imz, makeTmp, startServer, waitFor } from '../helpers.ts';

const T = suite('http view');

let server: ServerHandle;
let httpPort = 0;
let srv = '';
const big = Buffer.from(new Uint8Array(200 * 1024 + 3).map((_, i) => (i * 31 + 7) & 0xff));
const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

type Reply = HttpReply;

/** One request over a fresh connection, target sent as given. */
function http(method: string, path: string, headers: Record<string, string> = {}, port = httpPort): Promise<Reply> {
  return httpRequest(port, method, path, headers);
}

function listening(h: ServerHandle): Record<string, unknown> {
  return JSON.parse(h.output().stdout.split('\n')[0]!);
}

T.before(async () => {
  const tmp = await makeTmp('imz-http-it-');
  srv = join(tmp, 'srv');
  await mkdir(join(srv, 'docs/img'), { recursive: true });
  await mkdir(join(tmp, 'outside'));
  await writeFile(join(tmp, 'outside/secret'), 'TOP SECRET');
  await writeFile(join(srv, 'docs/readme.md'), '# hello\n');
  await writeFile(join(srv, 'docs/img/pic.png'), big);
  await writeFile(join(srv, 'notes.txt'), 'first version');
  await symlink('../outside/secret', join(srv, 'escape'));
  await symlink('docs/readme.md', join(srv, 'readme'));
  server = await startServer(srv, ['--http', '0']);
  const ev = listening(server);
  assert.is(ev.httpHost, '127.0.0.1');
  assert.type(ev.httpPort, 'number');
  httpPort = ev.httpPort as number;
  assert.is.not(httpPort, server.port);
});
T.after(cleanupAll);

T('files: GET with headers, HEAD without body, ranges, 304', async () => {
  const r = await http('GET', '/docs/readme.md');
  assert.is(r.status, 200);
  assert.is(r.body.toString(), '# hello\n');
  assert.is(r.headers['content-type'], 'text/markdown; charset=utf-8');
  assert.is(r.headers['content-length'], '8');
  assert.is(r.headers.etag, `"${sha('# hello\n')}"`);
  assert.ok(r.headers['last-modified']);
  assert.is(r.headers['accept-ranges'], 'bytes');
  const h = await http('HEAD', '/docs/readme.md');
  assert.is(h.status, 200);
  assert.is(h.body.length, 0);
  for (const k of ['content-type', 'content-length', 'etag', 'last-modified', 'accept-ranges']) assert.is(h.headers[k], r.headers[k], k);
  const pic = await http('GET', '/docs/img/pic.png');
  assert.ok(pic.complete && pic.body.equals(big));
  assert.is(pic.headers['content-type'], 'image/png');
  const firstBytes = await http('GET', '/docs/img/pic.png', { Range: 'bytes=0-99' });
  assert.is(firstBytes.status, 206);
  assert.is(firstBytes.headers['content-range'], `bytes 0-99/${big.length}`);
  assert.ok(firstBytes.body.equals(big.subarray(0, 100)));
  const suffix = await http('GET', '/docs/img/pic.png', { Range: 'bytes=-1000' });
  assert.is(suffix.status, 206);
  assert.ok(suffix.body.equals(big.subarray(big.length - 1000)));
  const openEnded = await http('GET', '/docs/img/pic.png', { Range: 'bytes=150000-' });
  assert.is(openEnded.headers['content-range'], `bytes 150000-${big.length - 1}/${big.length}`);
  assert.ok(openEnded.body.equals(big.subarray(150000)));
  const unsat = await http('GET', '/docs/img/pic.png', { Range: `bytes=${big.length}-` });
  assert.is(unsat.status, 416);
  assert.is(unsat.headers['content-range'], `bytes */${big.length}`);
  const cached = await http('GET', '/docs/readme.md', { 'If-None-Match': r.headers.etag as string });
  assert.is(cached.status, 304);
  assert.is(cached.body.length, 0);
});

T('directories: HTML and JSON listings, 301 to the slash form; 404 and 405', async () => {
  const html = await http('GET', '/docs/');
  assert.is(html.status, 200);
  assert.match(String(html.headers['content-type']), /^text\/html/);
  const page = html.body.toString();
  assert.ok(page.includes('href="./readme.md"') && page.includes('href="./img/"'), page);
  const json = await http('GET', '/docs/', { Accept: 'application/json' });
  const j = JSON.parse(json.body.toString());
  assert.is(j.path, 'docs');
  assert.equal(j.entries.map((e: { name: string; type: string }) => `${e.name}:${e.type}`), ['img:dir', 'readme.md:file']);
  assert.is(j.entries[1].hash, sha('# hello\n'));
  assert.is(j.entries[1].size, 8);
  const root = JSON.parse((await http('GET', '/?format=json')).body.toString());
  assert.equal(root.entries.map((e: { name: string }) => e.name), ['docs', 'escape', 'notes.txt', 'readme']);
  const moved = await http('GET', '/docs/img');
  assert.is(moved.status, 301);
  assert.is(moved.headers.location, '/docs/img/');
  assert.is((await http('GET', '/readme')).headers.location, '/docs/readme.md');
  assert.is((await http('GET', '/missing.txt')).status, 404);
  for (const m of ['POST', 'PUT', 'DELETE']) {
    const r = await http(m, '/notes.txt');
    assert.is(r.status, 405, m);
    assert.is(r.headers.allow, 'GET, HEAD');
  }
  assert.is((await http('GET', '/notes.txt')).body.toString(), 'first version');
});

T('traversal and reserved paths serve nothing outside the tree', async () => {
  for (const p of ['/../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/.imz-server/identity', '/.imz-server/', '/a/..%2f..%2fx', '/%00',
    '/docs/%2e%2e/%2e%2e/outside/secret', '//etc/passwd', '/escape', '/..%2foutside%2fsecret']) {
    const r = await http('GET', p);
    assert.ok(r.status === 400 || r.status === 404, `${p}: ${r.status}`);
    const body = r.body.toString();
    assert.ok(!body.includes('TOP SECRET') && !body.includes('root:'), p);
  }
});

T('a file changed on disk is never served with the old ETag; a new file appears', async () => {
  const oldTag = `"${sha('first version')}"`;
  await writeFile(join(srv, 'notes.txt'), 'second version, longer');
  // Until the watcher has rescanned it the view answers 503; every 200 carries the ETag of its own body.
  const seen = new Set<number>();
  await waitFor(async () => {
    const r = await http('GET', '/notes.txt');
    seen.add(r.status);
    assert.ok(r.status === 200 || r.status === 503, String(r.status));
    if (r.status !== 200) return false;
    assert.ok(r.complete);
    assert.is(r.headers.etag, `"${sha(r.body)}"`);
    return r.body.toString() === 'second version, longer';
  }, 5_000, 'the new version over HTTP', 10);
  assert.is((await http('GET', '/notes.txt', { 'If-None-Match': oldTag })).status, 200);
  await writeFile(join(srv, 'docs/later.txt'), 'written later');
  const later = await waitFor(async () => {
    const r = await http('GET', '/docs/later.txt');
    return r.status === 200 ? r : undefined;
  }, 5_000, 'docs/later.txt over HTTP');
  assert.is(later!.body.toString(), 'written later');
  assert.is(later!.headers.etag, `"${sha('written later')}"`);
  const j = JSON.parse((await http('GET', '/docs/?format=json')).body.toString());
  assert.ok(j.entries.some((e: { name: string }) => e.name === 'later.txt'));
});

T('SIGTERM closes the HTTP view and the server exits 0', async () => {
  const r = await server.stop();
  assert.is(r.code, 0, server.output().stderr);
  assert.ok(server.output().stdout.includes('"event":"stopped"'));
  try {
    await http('GET', '/notes.txt');
    assert.unreachable('still answering');
  } catch (err) {
    assert.match((err as Error).message, /ECONNREFUSED|ECONNRESET|socket hang up/);
  }
});

T('options: a non-loopback --http-host needs --insecure (and warns); --http-host needs --http', async () => {
  const refused = await imz(['serve', srv, '--port', '0', '--http', '0', '--http-host', '0.0.0.0', '--json']);
  assert.is(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /no authentication/);
  const lonely = await imz(['serve', srv, '--port', '0', '--http-host', '127.0.0.1']);
  assert.is(lonely.code, 2, lonely.stderr);
  const badPort = await imz(['serve', srv, '--port', '0', '--http', '70000']);
  assert.is(badPort.code, 2, badPort.stderr);
  const open = await startServer(srv, ['--http', '0', '--http-host', '0.0.0.0', '--insecure']);
  const ev = listening(open);
  assert.is(ev.httpHost, '0.0.0.0');
  assert.match(open.output().stderr, /INSECURE: the HTTP view/);
  const r = await http('GET', '/docs/readme.md', {}, ev.httpPort as number);
  assert.is(r.status, 200);
  assert.is((await open.stop()).code, 0);
});

T.run();
