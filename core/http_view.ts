import { createHash } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { type AddressInfo, isIP } from 'node:net';
import { join, posix } from 'node:path';
import { Codes, ImzError } from '../protocol/errors.ts';
import { EntryType } from '../protocol/messages.ts';
import { isReservedName, pathProblem } from './paths.ts';
import { type ImzServer, isLoopback } from './server.ts';
import type { TableEntry } from './server_state.ts';
import { sameMtime } from './tree_scan.ts';

/**
 * A read-only HTTP view of a served tree (`imz serve DIR --http PORT`).
 *
 * It answers from the server's version table only: a path that is not in the
 * table (ignored, skipped, reserved, outside the tree) does not exist here.
 * Files are opened with O_NOFOLLOW and checked against their table entry
 * (size, mtime, inode) before anything is sent; a full body is hashed as it
 * streams and its last chunk is held back until the hash matches the ETag,
 * so a client never gets a complete response whose content differs from its
 * ETag. Symlinks are never followed: one whose target is a relative path
 * inside the tree answers with a redirect to that path, any other is 404.
 */

/** What the view needs of a server: its root, table lookups, and checked opens. */
export interface HttpViewSource {
  /** Absolute root of the served tree. */
  readonly root: string;
  /** The table entry of a path ('' is the root directory). */
  lookup(path: string): TableEntry | undefined;
  /** A directory's children (name and entry), sorted by name. */
  children(dir: string): [string, TableEntry][];
  /** Opens a file for reading if it still is the version t describes; undefined when it changed. */
  open(path: string, t: TableEntry): Promise<FileHandle | undefined>;
}

/** Options of startHttpView. */
export interface HttpViewOptions {
  /** TCP port (0 picks a free one). */
  port: number;
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** Allow a non-loopback host: the view has no authentication. */
  insecure?: boolean;
  /** Most connections at once (default 256). */
  maxConnections?: number;
  /** Close a connection idle (nothing read or written) this long (default 60 s). */
  idleMs?: number;
  /** Unexpected errors while answering (the request got a 500 or was cut). */
  onWarning?: (e: Error) => void;
}

/** A started HTTP view. */
export interface HttpView {
  host: string;
  port: number;
  /** Stops listening, cuts open connections, waits for requests in progress to let go of their files. */
  close(): Promise<void>;
}

/** Bytes read (and written) per step. */
const CHUNK = 64 * 1024;
/** Directory entries rendered per write. */
const LIST_BATCH = 500;

const ROOT_ENTRY: TableEntry = { type: EntryType.DIR, size: 0, mode: 0o755, mtimeMs: 0, hash: '', target: '', version: 0, ino: 0 };

const TEXT = 'charset=utf-8';
const MIME: Record<string, string> = {
  txt: `text/plain; ${TEXT}`, md: `text/markdown; ${TEXT}`, csv: `text/csv; ${TEXT}`, tsv: `text/tab-separated-values; ${TEXT}`,
  log: `text/plain; ${TEXT}`, html: `text/html; ${TEXT}`, htm: `text/html; ${TEXT}`, css: `text/css; ${TEXT}`,
  js: `text/javascript; ${TEXT}`, mjs: `text/javascript; ${TEXT}`, ts: `text/plain; ${TEXT}`, json: 'application/json',
  xml: 'application/xml', yaml: `text/yaml; ${TEXT}`, yml: `text/yaml; ${TEXT}`, toml: `text/plain; ${TEXT}`,
  svg: 'image/svg+xml', png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif', webp: 'image/webp',
  avif: 'image/avif', ico: 'image/x-icon', bmp: 'image/bmp', pdf: 'application/pdf', wasm: 'application/wasm',
  zip: 'application/zip', gz: 'application/gzip', tgz: 'application/gzip', tar: 'application/x-tar', xz: 'application/x-xz',
  zst: 'application/zstd', bz2: 'application/x-bzip2', '7z': 'application/x-7z-compressed', mp3: 'audio/mpeg', ogg: 'audio/ogg',
  wav: 'audio/wav', flac: 'audio/flac', mp4: 'video/mp4', webm: 'video/webm', mkv: 'video/x-matroska', woff: 'font/woff',
  woff2: 'font/woff2', ttf: 'font/ttf', otf: 'font/otf',
};

/** Content-Type for a file name, from its extension (application/octet-stream when unknown). */
export function contentTypeOf(name: string): string {
  const base = name.slice(name.lastIndexOf('/') + 1);
  const dot = base.lastIndexOf('.');
  if (dot <= 0) return 'application/octet-stream';
  return MIME[base.slice(dot + 1).toLowerCase()] ?? 'application/octet-stream';
}

/**
 * The HttpViewSource of a running ImzServer: lookups in its table, a
 * children index rebuilt after each commit, and opens checked the way the
 * server's READ checks them (O_NOFOLLOW, then fstat against the entry).
 */
export function tableSource(server: ImzServer): HttpViewSource & { dispose(): void } {
  const state = server.state;
  if (!state) throw new ImzError(Codes.BAD_USAGE, 'cannot serve HTTP: start the imz server first');
  let index: Map<string, [string, TableEntry][]> | undefined;
  let indexSeq = -1;
  const invalidate = () => { index = undefined; };
  state.on('records', invalidate);
  const build = () => {
    const m = new Map<string, [string, TableEntry][]>();
    for (const [p, t] of state.table) {
      const i = p.lastIndexOf('/');
      const dir = i < 0 ? '' : p.slice(0, i);
      let list = m.get(dir);
      if (!list) m.set(dir, (list = []));
      list.push([p.slice(i + 1), t]);
    }
    for (const list of m.values()) list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return m;
  };
  return {
    root: server.root,
    lookup: (path) => (path === '' ? ROOT_ENTRY : state.table.get(path)),
    children: (dir) => {
      // Rebuilt after every commit ('records'), and whenever the journal moved since (a commit in progress).
      if (!index || indexSeq !== state.lastSeq) {
        indexSeq = state.lastSeq;
        index = build();
      }
      return index.get(dir) ?? [];
    },
    // An on-demand mirror brings a listed file's content here first.
    open: async (path, t) => {
      await server.materialize([path]);
      return openChecked(server.root, path, t);
    },
    dispose: () => { state.off('records', invalidate); },
  };
}

/** True when an open file's status still matches its table entry. */
function matches(st: { isFile(): boolean; size: number; mtimeMs: number; ino: number }, t: TableEntry): boolean {
  return st.isFile() && st.size === t.size && sameMtime(st.mtimeMs, t.mtimeMs) && (t.ino <= 0 || st.ino === t.ino);
}

/**
 * Opens root/path for reading if it is still the file t describes
 * (undefined when it changed). O_NOFOLLOW refuses a symlink in last place;
 * the inode check refuses whatever a parent swapped for a symlink reached;
 * O_NONBLOCK keeps a FIFO put in the file's place from blocking the open.
 */
export async function openChecked(root: string, path: string, t: TableEntry): Promise<FileHandle | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(join(root, path), fsc.O_RDONLY | fsc.O_NOFOLLOW | (fsc.O_NONBLOCK ?? 0));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR' || code === 'ENXIO' || code === 'EISDIR') return undefined;
    throw err;
  }
  try {
    if (matches(await fh.stat(), t)) return fh;
  } catch (err) {
    await fh.close();
    throw err;
  }
  await fh.close();
  return undefined;
}

/** Where a request target points, or why it is refused. */
export type Target =
  | { ok: true; path: string; slash: boolean; query: URLSearchParams }
  | { ok: false; status: 400 | 404; why: string };

/**
 * Parses a request target into a table path: origin-form only, each segment
 * percent-decoded on its own (an encoded '/' is refused, never a separator),
 * then checked like a path from the wire (pathProblem): '..', '.', empty
 * segments (double slashes), NUL and control characters are 400; reserved
 * names (.imz, .imz-server, .imz-tmp-*) are 404, as they are never served.
 */
export function parseTarget(url: string): Target {
  if (!url.startsWith('/') || url.startsWith('//')) return { ok: false, status: 400, why: 'the request target must be a path starting with one /' };
  const q = url.indexOf('?');
  const raw = q < 0 ? url : url.slice(0, q);
  const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
  if (raw.includes('#')) return { ok: false, status: 400, why: 'a fragment in the request target' };
  const slash = raw.length > 1 && raw.endsWith('/');
  const body = raw.slice(1, slash ? -1 : undefined);
  if (body === '') return { ok: true, path: '', slash: true, query };
  const segs: string[] = [];
  for (const s of body.split('/')) {
    let d: string;
    try {
      d = decodeURIComponent(s);
    } catch {
      return { ok: false, status: 400, why: 'bad percent-encoding' };
    }
    if (d.includes('/')) return { ok: false, status: 400, why: 'an encoded / in a name' };
    if (isReservedName(d)) return { ok: false, status: 404, why: 'not served' };
    segs.push(d);
  }
  const path = segs.join('/');
  const why = pathProblem(path);
  if (why) return { ok: false, status: 400, why };
  return { ok: true, path, slash, query };
}

/** The URL path of a table path ('/' for the root), each segment percent-encoded. */
export function urlOf(path: string, dir = false): string {
  if (path === '') return '/';
  return `/${path.split('/').map(encodeURIComponent).join('/')}${dir ? '/' : ''}`;
}

/** A byte range to send, inclusive. */
interface ByteRange { start: number; end: number }

/**
 * The one range a Range header asks for: a range, 'unsatisfiable', or
 * undefined to send the whole file (no header, not bytes, malformed, or
 * several ranges: RFC 9110 lets a server ignore those).
 */
export function parseRange(h: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (!h) return undefined;
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(h);
  if (!m) return undefined;
  const spec = m[1]!.trim();
  if (spec.includes(',')) return undefined;
  const r = /^(\d*)\s*-\s*(\d*)$/.exec(spec);
  if (!r || (r[1] === '' && r[2] === '')) return undefined;
  if (r[1] === '') {
    const n = Number(r[2]);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(r[1]);
  if (r[2] !== '' && Number(r[2]) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end: r[2] === '' ? size - 1 : Math.min(Number(r[2]), size - 1) };
}

const hexOf = (hash: string) => Buffer.from(hash, 'latin1').toString('hex');

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** True when an If-None-Match list names etag (weak comparison, as RFC 9110 asks for it). */
function noneMatch(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  return header.split(',').some((x) => x.trim().replace(/^W\//, '') === etag);
}

/** Starts the HTTP view of a server (or of any HttpViewSource). */
export async function startHttpView(server: ImzServer | HttpViewSource, opts: HttpViewOptions): Promise<HttpView> {
  const host = opts.host ?? '127.0.0.1';
  if (!isLoopback(host) && !opts.insecure) {
    throw new ImzError(Codes.BAD_USAGE, `cannot serve HTTP on ${host}: the HTTP view has no authentication, so it listens on loopback addresses only (use --http-host 127.0.0.1, or --insecure to let anyone who can connect read the tree)`);
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new ImzError(Codes.BAD_USAGE, `cannot serve HTTP: port ${opts.port} is not a TCP port (0 to 65535)`);
  }
  const isSource = typeof (server as HttpViewSource).lookup === 'function';
  const src = isSource ? server as HttpViewSource : tableSource(server as ImzServer);
  const dispose = isSource ? () => {} : (src as ReturnType<typeof tableSource>).dispose;
  const view = new _View(src, host, opts);
  const http = createServer((req, res) => view.handle(req, res));
  http.maxConnections = opts.maxConnections ?? 256;
  http.headersTimeout = 15_000;
  http.requestTimeout = 30_000;
  // A reader that stops reading holds a file open: cut it after this long.
  http.setTimeout(opts.idleMs ?? 60_000);
  try {
    await new Promise<void>((res, rej) => {
      http.once('error', rej);
      http.listen(opts.port, host, () => { http.off('error', rej); res(); });
    });
  } catch (err) {
    dispose();
    const e = err as NodeJS.ErrnoException;
    throw new ImzError(Codes.BAD_USAGE, `cannot serve HTTP on ${host}:${opts.port}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : e.message}`);
  }
  http.on('error', (e) => opts.onWarning?.(e));
  const addr = http.address() as AddressInfo;
  return {
    host: addr.address,
    port: addr.port,
    close: async () => {
      dispose();
      const closed = new Promise<void>((r) => http.close(() => r()));
      (http as Server & { closeAllConnections?: () => void }).closeAllConnections?.();
      await closed;
      await view.idle();
    },
  };
}

class _View {
  private _active = new Set<Promise<void>>();
  private _src: HttpViewSource;
  private _host: string;
  private _opts: HttpViewOptions;

  constructor(src: HttpViewSource, host: string, opts: HttpViewOptions) {
    this._src = src;
    this._host = host;
    this._opts = opts;
  }

  /** Resolves when no request holds a file any more. */
  async idle(): Promise<void> {
    while (this._active.size > 0) await Promise.allSettled([...this._active]);
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    const p = this._answer(req, res).catch((err) => {
      this._opts.onWarning?.(new Error(`HTTP view: ${req.method} ${String(req.url).slice(0, 200)}: ${(err as Error).message}`));
      if (!res.headersSent) this._text(res, req, 500, 'internal error\n');
      else res.destroy();
    }).finally(() => this._active.delete(p));
    this._active.add(p);
  }

  private _text(res: ServerResponse, req: IncomingMessage, status: number, body: string, headers: Record<string, string> = {}): void {
    const b = Buffer.from(body);
    res.writeHead(status, { 'Content-Type': `text/plain; ${TEXT}`, 'Content-Length': String(b.length), 'Cache-Control': 'no-store', ...headers });
    res.end(req.method === 'HEAD' ? undefined : b);
  }

  // DNS rebinding: a web page whose name resolves to 127.0.0.1 must not read
  // the tree through the visitor's browser, so on loopback only IP literals,
  // localhost and the configured host are accepted as Host.
  private _hostAllowed(req: IncomingMessage): boolean {
    if (!isLoopback(this._host)) return true;
    const h = req.headers.host;
    if (h === undefined) return true;
    let name = h.trim().toLowerCase();
    if (name.startsWith('[')) name = name.slice(1, name.indexOf(']') < 0 ? undefined : name.indexOf(']'));
    else if (name.split(':').length === 2) name = name.slice(0, name.indexOf(':'));
    return isIP(name) !== 0 || name === 'localhost' || name === this._host.toLowerCase();
  }

  private async _answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      // The body is not read: close instead of draining an upload nobody wants.
      return this._text(res, req, 405, 'method not allowed: this view is read-only (GET, HEAD)\n', { Allow: 'GET, HEAD', Connection: 'close' });
    }
    if (!this._hostAllowed(req)) return this._text(res, req, 421, 'unexpected Host header\n');
    const target = parseTarget(req.url ?? '');
    if (!target.ok) return this._text(res, req, target.status, target.status === 404 ? 'not found\n' : `bad path: ${target.why}\n`);
    const { path, slash, query } = target;
    const t = this._src.lookup(path);
    if (!t) return this._text(res, req, 404, 'not found\n');
    const qs = query.toString() ? `?${query}` : '';
    if (t.type === EntryType.DIR) {
      if (!slash) return this._text(res, req, 301, 'moved\n', { Location: urlOf(path, true) + qs });
      return this._listing(req, res, path, query);
    }
    if (t.type === EntryType.SYMLINK) {
      const to = this._linkTarget(path, t.target);
      if (to === undefined) return this._text(res, req, 404, 'not found (a symlink that leads out of the tree)\n');
      return this._text(res, req, 302, `symlink to ${t.target}\n`, { Location: urlOf(to, to === '' || this._src.lookup(to)?.type === EntryType.DIR) });
    }
    if (t.type !== EntryType.FILE || slash) return this._text(res, req, 404, 'not found\n');
    return this._file(req, res, path, t);
  }

  // A symlink's target as a table path when it is relative and stays inside the tree.
  private _linkTarget(path: string, target: string): string | undefined {
    if (target === '' || target.startsWith('/')) return undefined;
    const i = path.lastIndexOf('/');
    const joined = posix.normalize(i < 0 ? target : `${path.slice(0, i)}/${target}`).replace(/\/+$/, '');
    const to = joined === '.' ? '' : joined;
    if (to === '..' || to.startsWith('../') || pathProblem(to, true)) return undefined;
    return this._src.lookup(to) ? to : undefined;
  }

  private async _file(req: IncomingMessage, res: ServerResponse, path: string, t: TableEntry): Promise<void> {
    const head = req.method === 'HEAD';
    // Checked before any answer, 304 included: the table must describe what is on disk.
    let fh: FileHandle | undefined;
    try {
      fh = await this._src.open(path, t);
    } catch (err) {
      // A mirror that cannot reach its upstream for a file it does not have yet.
      if ((err as { code?: string }).code === 'IMZ_UNREACHABLE') return this._text(res, req, 502, 'this mirror does not have the file yet and cannot reach its upstream: retry later\n', { 'Retry-After': '5' });
      throw err;
    }
    if (!fh) return this._text(res, req, 503, 'changed on the server: retry in a moment\n', { 'Retry-After': '1' });
    try {
      const etag = `"${hexOf(t.hash)}"`;
      const lastModified = new Date(t.mtimeMs).toUTCString();
      res.setHeader('ETag', etag);
      res.setHeader('Last-Modified', lastModified);
      res.setHeader('Accept-Ranges', 'bytes');
      res.setHeader('Cache-Control', 'no-cache');
      const inm = req.headers['if-none-match'];
      const ims = req.headers['if-modified-since'];
      if (inm !== undefined ? noneMatch(inm, etag) : ims !== undefined && Math.floor(t.mtimeMs / 1000) * 1000 <= Date.parse(ims)) {
        res.writeHead(304);
        res.end();
        return;
      }
      const ifRange = req.headers['if-range'] === undefined ? undefined : String(req.headers['if-range']).trim();
      const rangeOk = ifRange === undefined || ifRange === etag || ifRange === lastModified;
      const range = rangeOk ? parseRange(req.headers.range, t.size) : undefined;
      if (range === 'unsatisfiable') return this._text(res, req, 416, 'range not satisfiable\n', { 'Content-Range': `bytes */${t.size}` });
      const { start, end } = range ?? { start: 0, end: t.size - 1 };
      res.setHeader('Content-Type', contentTypeOf(path));
      res.setHeader('Content-Length', String(end - start + 1));
      if (range) res.setHeader('Content-Range', `bytes ${start}-${end}/${t.size}`);
      res.writeHead(range ? 206 : 200);
      if (head) {
        res.end();
        return;
      }
      await this._stream(fh, res, start, end + 1, t, range === undefined);
    } finally {
      await fh.close();
    }
  }

  // Sends [start, end) of the file, one chunk behind the reads: the last
  // chunk goes out only when the file still matches its entry (and, for a
  // whole body, its SHA-256 is the ETag's), else the connection is cut and
  // the client sees a short body instead of a complete wrong one.
  private async _stream(fh: FileHandle, res: ServerResponse, start: number, end: number, t: TableEntry, whole: boolean): Promise<void> {
    const hash = whole && t.hash ? createHash('sha256') : undefined;
    let pos = start;
    let held: Buffer | undefined;
    while (pos < end) {
      if (res.destroyed) return;
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, end - pos));
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) {
        res.destroy(); // shrank under us
        return;
      }
      const chunk = buf.subarray(0, bytesRead);
      hash?.update(chunk);
      pos += bytesRead;
      if (held && !res.write(held)) await _drained(res);
      held = chunk;
    }
    if (res.destroyed) return;
    if (!matches(await fh.stat(), t) || (hash && hash.digest().toString('latin1') !== t.hash)) {
      res.destroy();
      return;
    }
    res.end(held);
  }

  private async _listing(req: IncomingMessage, res: ServerResponse, dir: string, query: URLSearchParams): Promise<void> {
    const format = query.get('format');
    const json = format === 'json' || (format !== 'html' && /\bapplication\/json\b/i.test(String(req.headers.accept ?? '')));
    res.writeHead(200, {
      'Content-Type': json ? 'application/json' : `text/html; ${TEXT}`,
      'Cache-Control': 'no-cache',
      Vary: 'Accept',
      ...(json ? {} : { 'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'" }),
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const kids = this._src.children(dir);
    const write = async (s: string) => { if (!res.write(s)) await _drained(res); };
    if (json) {
      await write(`{"path":${JSON.stringify(dir)},"entries":[`);
      for (let i = 0; i < kids.length && !res.destroyed; i += LIST_BATCH) {
        const part = kids.slice(i, i + LIST_BATCH).map(([name, t]) => JSON.stringify({
          name, type: t.type === EntryType.DIR ? 'dir' : t.type === EntryType.SYMLINK ? 'symlink' : 'file',
          size: t.size, mtimeMs: t.mtimeMs, version: t.version, hash: t.type === EntryType.FILE && t.hash ? hexOf(t.hash) : null,
          ...(t.type === EntryType.SYMLINK ? { target: t.target } : {}),
        }));
        await write((i > 0 ? ',' : '') + part.join(','));
      }
      if (!res.destroyed) res.end(']}\n');
      return;
    }
    const title = escapeHtml(`Index of /${dir}${dir ? '/' : ''}`);
    await write(`<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${title}</title>`
      + '<style>body{font-family:sans-serif}td{padding:0 1em 0 0}td.n{text-align:right}</style></head>\n'
      + `<body><h1>${title}</h1>\n<table>\n<tr><th>name</th><th>size</th><th>modified</th><th>version</th></tr>\n`
      + (dir ? '<tr><td><a href="../">../</a></td><td></td><td></td><td></td></tr>\n' : ''));
    for (let i = 0; i < kids.length && !res.destroyed; i += LIST_BATCH) {
      await write(kids.slice(i, i + LIST_BATCH).map(([name, t]) => {
        const isDir = t.type === EntryType.DIR;
        const label = escapeHtml(name) + (isDir ? '/' : t.type === EntryType.SYMLINK ? ` → ${escapeHtml(t.target)}` : '');
        const href = `./${encodeURIComponent(name)}${isDir ? '/' : ''}`;
        const size = t.type === EntryType.FILE ? String(t.size) : '';
        const when = t.mtimeMs > 0 ? new Date(t.mtimeMs).toISOString() : '';
        return `<tr><td><a href="${escapeHtml(href)}">${label}</a></td><td class="n">${size}</td><td>${when}</td><td class="n">${t.version}</td></tr>\n`;
      }).join(''));
    }
    if (!res.destroyed) res.end('</table>\n</body></html>\n');
  }
}

/** Resolves when res can take more, or is gone. */
function _drained(res: ServerResponse): Promise<void> {
  return new Promise<void>((r) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      r();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}
