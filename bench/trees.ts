// Benchmark trees: deterministic layouts and content, a cache keyed by a
// manifest, tree listings, replica verification and the incremental change sets.
import { createHash } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  createReadStream,
  existsSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { Rng, contentBytes, contentChunks, contentKey } from './rng.ts';

/** Bump when the generator changes: cached trees with another version are rebuilt. */
export const GENERATOR_VERSION = 1;

export interface TreeSpec {
  name: string;
  kind: 'files' | 'big';
  seed: string;
  /** kind 'files': number of files, directories, size range in bytes (inclusive). */
  files: number;
  dirs: number;
  minSize: number;
  maxSize: number;
  /** kind 'big': size of the one file. */
  bigBytes: number;
}

export interface FileEntry {
  rel: string;
  size: number;
  mode: number;
  index: number;
}

export interface Layout {
  dirs: string[];
  files: FileEntry[];
  bytes: number;
}

export const MiB = 1024 * 1024;

export function smallSpec(files: number): TreeSpec {
  return { name: `small-${files}`, kind: 'files', seed: `imz-bench:small:${files}`, files, dirs: Math.max(2, Math.round(files / 100)), minSize: 0, maxSize: 16 * 1024, bigBytes: 0 };
}

export function bigSpec(bytes: number): TreeSpec {
  return { name: `big-${bytes / MiB}MiB`, kind: 'big', seed: `imz-bench:big:${bytes}`, files: 1, dirs: 0, minSize: bytes, maxSize: bytes, bigBytes: bytes };
}

export function incSpec(files: number): TreeSpec {
  return { name: `inc-${files}`, kind: 'files', seed: `imz-bench:inc:${files}`, files, dirs: Math.max(2, Math.round(files / 100)), minSize: 1024, maxSize: 4096, bigBytes: 0 };
}

const pad = (n: number, w: number): string => String(n).padStart(w, '0');
const EXTS = ['txt', 'dat', 'json', 'bin', 'md', 'c', 'log', 'csv'] as const;

/**
 * Directories nested 2-3 levels (dNN/sNN, a third of them with a tNN below),
 * files spread uniformly over them; about 1 file in 50 is executable.
 */
export function layout(spec: TreeSpec): Layout {
  if (spec.kind === 'big') {
    return { dirs: [], files: [{ rel: 'big.bin', size: spec.bigBytes, mode: 0o644, index: 0 }], bytes: spec.bigBytes };
  }
  const rng = new Rng(`${spec.seed}:layout`);
  const top = Math.max(2, Math.round(Math.sqrt(spec.dirs)));
  const dirs: string[] = [];
  for (let i = 0; i < spec.dirs; i++) {
    let d = `d${pad(i % top, 2)}/s${pad(Math.floor(i / top), 2)}`;
    if (rng.below(3) === 0) d += `/t${pad(rng.below(10), 2)}`;
    dirs.push(d);
  }
  const files: FileEntry[] = [];
  let bytes = 0;
  for (let j = 0; j < spec.files; j++) {
    const dir = dirs[rng.below(dirs.length)]!;
    const rel = `${dir}/f${pad(j, 6)}.${rng.pick(EXTS)}`;
    const size = rng.range(spec.minSize, spec.maxSize);
    const mode = rng.below(50) === 0 ? 0o755 : 0o644;
    files.push({ rel, size, mode, index: j });
    bytes += size;
  }
  return { dirs, files, bytes };
}

interface Manifest {
  generator: number;
  spec: TreeSpec;
  files: number;
  bytes: number;
  generatedAt: string;
  seconds: number;
}

export interface CachedTree {
  spec: TreeSpec;
  dir: string;
  layout: Layout;
  reused: boolean;
}

/** Count regular files and their bytes (lstat walk) – the cache's sanity check. */
function quickCount(dir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const e of listTree(dir).values()) {
    if (e.type === 'file') {
      files++;
      bytes += e.size;
    }
  }
  return { files, bytes };
}

/**
 * Make sure `srcRoot/<name>/` holds the tree: reuse it when its manifest
 * matches the spec (and a file count/size walk agrees), otherwise regenerate.
 */
export function ensureTree(srcRoot: string, spec: TreeSpec, log: (s: string) => void): CachedTree {
  const dir = join(srcRoot, spec.name);
  const manifestPath = join(srcRoot, `${spec.name}.manifest.json`);
  const lay = layout(spec);
  if (existsSync(manifestPath) && existsSync(dir)) {
    try {
      const m = JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
      if (m.generator === GENERATOR_VERSION && JSON.stringify(m.spec) === JSON.stringify(spec)) {
        const c = quickCount(dir);
        if (c.files === lay.files.length && c.bytes === lay.bytes) {
          log(`tree ${spec.name}: cached (${c.files.toLocaleString('en-US')} file${c.files === 1 ? '' : 's'}, ${fmtBytes(c.bytes)}) in ${dir}`);
          return { spec, dir, layout: lay, reused: true };
        }
        log(`tree ${spec.name}: cache does not match its manifest (${c.files} files, ${c.bytes} bytes): regenerating`);
      }
    } catch {
      /* unreadable manifest: regenerate */
    }
  }
  rmSync(manifestPath, { force: true });
  rmSync(dir, { recursive: true, force: true });
  log(`tree ${spec.name}: generating ${lay.files.length.toLocaleString('en-US')} file${lay.files.length === 1 ? '' : 's'}, ${fmtBytes(lay.bytes)} in ${dir} ...`);
  const t0 = performance.now();
  mkdirSync(dir, { recursive: true });
  const key = contentKey(spec.seed);
  if (spec.kind === 'big') {
    const f = lay.files[0]!;
    const fd = openSync(join(dir, f.rel), 'w', f.mode);
    try {
      for (const chunk of contentChunks(key, 0, 0, f.size)) writeSync(fd, chunk);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } else {
    writeFiles(dir, spec, lay);
  }
  const seconds = (performance.now() - t0) / 1000;
  const manifest: Manifest = { generator: GENERATOR_VERSION, spec, files: lay.files.length, bytes: lay.bytes, generatedAt: new Date().toISOString(), seconds };
  writeFileSync(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
  log(`tree ${spec.name}: generated in ${seconds.toFixed(1)} s`);
  return { spec, dir, layout: lay, reused: false };
}

/** Write the small files of a layout below `dir` (directories first). */
export function writeFiles(dir: string, spec: TreeSpec, lay: Layout): void {
  const key = contentKey(spec.seed);
  for (const d of lay.dirs) mkdirSync(join(dir, d), { recursive: true });
  for (const f of lay.files) writeFileSync(join(dir, f.rel), contentBytes(key, 0, f.index, f.size), { mode: f.mode });
}

/** A new directory of small files (0-16 KiB) to push into an existing tree; generated in place, not cached. */
export function newFilesSpec(files: number): TreeSpec {
  return { name: `new-${files}`, kind: 'files', seed: `imz-bench:new:${files}`, files, dirs: Math.max(2, Math.round(files / 100)), minSize: 0, maxSize: 16 * 1024, bigBytes: 0 };
}

// ---------------------------------------------------------------- listings

export interface Entry {
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtimeMs: number;
}

export type Listing = Map<string, Entry>;

/** Top-level names that are tool state, not tree content. */
export const STATE_DIRS = new Set(['.imz', '.imz-server']);

/** Every entry below `root` (relative paths, '/'-separated), tool state excluded. */
export function listTree(root: string): Listing {
  const out: Listing = new Map();
  const walk = (abs: string, rel: string): void => {
    for (const d of readdirSync(abs, { withFileTypes: true })) {
      if (rel === '' && STATE_DIRS.has(d.name)) continue;
      const r = rel === '' ? d.name : `${rel}/${d.name}`;
      const a = join(abs, d.name);
      const st = lstatSync(a);
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
      out.set(r, { type, size: type === 'file' ? st.size : 0, mode: st.mode & 0o7777, mtimeMs: st.mtimeMs });
      if (type === 'dir') walk(a, r);
    }
  };
  walk(root, '');
  return out;
}

export async function sha256File(path: string): Promise<string> {
  const st = lstatSync(path);
  if (st.size <= 8 * MiB) return createHash('sha256').update(readFileSync(path)).digest('hex');
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: MiB })) h.update(chunk as Buffer);
  return h.digest('hex');
}

export interface VerifyOptions {
  /** How many files (chosen by a seeded PRNG) to compare by SHA-256, besides `mustHash`. */
  sample: number;
  seed: string;
  /** Paths that must be present and identical (compared by hash). */
  mustHash?: string[];
  /** Paths that must not exist in the replica. */
  mustBeAbsent?: string[];
  /** Listing of the source, if already made (it is reused for several replicas). */
  src?: Listing;
  /** Source hashes already computed for this state of the source. */
  srcHashes?: Map<string, string>;
  /** Allowed mtime difference for files, ms. */
  mtimeToleranceMs?: number;
}

export interface VerifyResult {
  files: number;
  dirs: number;
  bytes: number;
  hashed: number;
}

/**
 * Compare a replica with its source: same set of paths and types, same file
 * sizes, executable bits and mtimes (within tolerance), and identical content
 * for a sample of files plus every path in `mustHash`. Throws on any mismatch.
 */
export async function verifyReplica(label: string, srcDir: string, repDir: string, opts: VerifyOptions): Promise<VerifyResult> {
  const src = opts.src ?? listTree(srcDir);
  const rep = listTree(repDir);
  const tol = opts.mtimeToleranceMs ?? 1000;
  const problems: string[] = [];
  let nProblems = 0;
  const problem = (s: string): void => {
    nProblems++;
    if (problems.length < 20) problems.push(s);
  };
  let files = 0;
  let dirs = 0;
  let bytes = 0;
  for (const [rel, s] of src) {
    const r = rep.get(rel);
    if (s.type === 'file') {
      files++;
      bytes += s.size;
    } else if (s.type === 'dir') dirs++;
    if (r === undefined) {
      problem(`missing in replica: ${rel} (${s.type})`);
      continue;
    }
    if (r.type !== s.type) {
      problem(`type differs: ${rel}: source ${s.type}, replica ${r.type}`);
      continue;
    }
    if (s.type === 'file') {
      if (r.size !== s.size) problem(`size differs: ${rel}: source ${s.size}, replica ${r.size}`);
      if ((r.mode & 0o111) !== (s.mode & 0o111)) problem(`executable bits differ: ${rel}: source ${s.mode.toString(8)}, replica ${r.mode.toString(8)}`);
      if (Math.abs(r.mtimeMs - s.mtimeMs) > tol) problem(`mtime differs: ${rel}: source ${new Date(s.mtimeMs).toISOString()}, replica ${new Date(r.mtimeMs).toISOString()}`);
    }
  }
  for (const rel of rep.keys()) if (!src.has(rel)) problem(`extra in replica: ${rel}`);
  for (const rel of opts.mustBeAbsent ?? []) if (rep.has(rel)) problem(`should have been deleted: ${rel}`);

  const toHash = new Set<string>();
  for (const rel of opts.mustHash ?? []) {
    if (src.get(rel)?.type !== 'file') problem(`bench error: ${rel} is not a file in the source`);
    else toHash.add(rel);
  }
  const candidates = [...src].filter(([, e]) => e.type === 'file').map(([rel]) => rel);
  const rng = new Rng(`${opts.seed}:sample`);
  for (let i = 0; i < opts.sample && candidates.length > 0; i++) toHash.add(candidates[rng.below(candidates.length)]!);
  let hashed = 0;
  for (const rel of toHash) {
    const r = rep.get(rel);
    if (r === undefined || r.type !== 'file') continue; // already reported
    let sh = opts.srcHashes?.get(rel);
    if (sh === undefined) {
      sh = await sha256File(join(srcDir, rel));
      opts.srcHashes?.set(rel, sh);
    }
    const rh = await sha256File(join(repDir, rel));
    hashed++;
    if (rh !== sh) problem(`content differs (SHA-256): ${rel}`);
  }
  if (nProblems > 0) {
    throw new Error(
      `REPLICA CHECK FAILED for ${label}: ${nProblems} problem(s) comparing ${repDir} with ${srcDir}:\n  - ${problems.join('\n  - ')}${nProblems > problems.length ? `\n  - ... and ${nProblems - problems.length} more` : ''}`,
    );
  }
  return { files, dirs, bytes, hashed };
}

// ---------------------------------------------------------------- changes

export interface ChangeSet {
  round: number;
  /** Content generation of the rewrites (default 100 + round). */
  tag?: number;
  modify: Array<{ rel: string; size: number; index: number }>;
  create: Array<{ rel: string; size: number; index: number }>;
  delete: string[];
}

/**
 * `rounds` disjoint sets of 10 changes (modify 5 files, create 3, delete 2),
 * the same on every run. Modified files change size so that any scan notices.
 */
export function planChanges(spec: TreeSpec, lay: Layout, rounds: number): ChangeSet[] {
  const rng = new Rng(`${spec.seed}:changes`);
  const used = new Set<number>();
  const fresh = (): FileEntry => {
    for (;;) {
      const f = lay.files[rng.below(lay.files.length)]!;
      if (!used.has(f.index)) {
        used.add(f.index);
        return f;
      }
    }
  };
  const sets: ChangeSet[] = [];
  for (let r = 0; r < rounds; r++) {
    const cs: ChangeSet = { round: r, modify: [], create: [], delete: [] };
    for (let k = 0; k < 5; k++) {
      const f = fresh();
      let size = rng.range(spec.minSize, spec.maxSize);
      if (size === f.size) size = f.size + 1;
      cs.modify.push({ rel: f.rel, size, index: f.index });
    }
    for (let k = 0; k < 3; k++) {
      const dir = lay.dirs[rng.below(lay.dirs.length)]!;
      cs.create.push({ rel: `${dir}/new-r${r}-${k}.dat`, size: rng.range(spec.minSize, spec.maxSize), index: r * 16 + k });
    }
    for (let k = 0; k < 2; k++) cs.delete.push(fresh().rel);
    sets.push(cs);
  }
  return sets;
}

/**
 * `rounds` disjoint sets of `count` in-place rewrites (no creates, no deletes)
 * for the push cases, avoiding `avoid` (paths another plan touches) and
 * always changing the size; content generation 200 + round.
 */
export function planModifies(spec: TreeSpec, lay: Layout, rounds: number, count: number, avoid: Set<string>): ChangeSet[] {
  const rng = new Rng(`${spec.seed}:push-changes`);
  const used = new Set<number>();
  const sets: ChangeSet[] = [];
  for (let r = 0; r < rounds; r++) {
    const cs: ChangeSet = { round: r, tag: 200 + r, modify: [], create: [], delete: [] };
    while (cs.modify.length < count) {
      const f = lay.files[rng.below(lay.files.length)]!;
      if (used.has(f.index) || avoid.has(f.rel)) continue;
      used.add(f.index);
      let size = rng.range(spec.minSize, spec.maxSize);
      if (size === f.size) size = f.size + 1;
      cs.modify.push({ rel: f.rel, size, index: f.index });
    }
    sets.push(cs);
  }
  return sets;
}

/**
 * The served work tree is a hard-linked copy of the cached tree. Files that
 * will be modified in place get their own inode first, so the cache stays intact.
 */
export function unshareFiles(workDir: string, sets: ChangeSet[]): void {
  for (const cs of sets) {
    for (const m of cs.modify) {
      const p = join(workDir, m.rel);
      const tmp = `${p}.unshare-tmp`;
      copyFileSync(p, tmp);
      renameSync(tmp, p);
    }
  }
}

/** Apply one change set to the served tree (in-place rewrites, new files, unlinks). */
export function applyChanges(workDir: string, spec: TreeSpec, cs: ChangeSet): void {
  const key = contentKey(spec.seed);
  for (const m of cs.modify) writeFileSync(join(workDir, m.rel), contentBytes(key, cs.tag ?? 100 + cs.round, m.index, m.size));
  for (const c of cs.create) writeFileSync(join(workDir, c.rel), contentBytes(key, 1000, c.index, c.size), { mode: 0o644 });
  for (const d of cs.delete) unlinkSync(join(workDir, d));
}

export function fmtBytes(n: number): string {
  if (n >= 1024 * MiB) return `${(n / (1024 * MiB)).toFixed(2)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}
