// Bundles the CLI into dist/ with esbuild so `imz` starts fast under plain node.
// Code splitting keeps heavy modules (the engine, tar, ora) out of `imz --version`.
import { build } from 'esbuild';
import { chmodSync, rmSync } from 'node:fs';

const out = new URL('../dist/', import.meta.url).pathname;
rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: {
    imz: new URL('../cli/main.ts', import.meta.url).pathname,
  },
  outdir: out,
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  logLevel: 'warning',
  chunkNames: 'chunks/[name]-[hash]',
  // string-width's Unicode tables cost ~40 ms per start; help layout needs far less.
  alias: { 'string-width': new URL('./string-width-lite.mjs', import.meta.url).pathname },
  banner: {
    js: "#!/usr/bin/env node\nimport { createRequire as __imzCreateRequire } from 'node:module'; const require = __imzCreateRequire(import.meta.url);",
  },
});
chmodSync(out + 'imz.js', 0o755);

// The second thread of a scan's lstat pass (core/pass_worker.ts finds it beside imz.js): one
// file with everything it needs, so the thread starts without loading shared chunks one by one.
// A CommonJS script, generated from the ES module: a worker that loads it skips building an ES
// module loader of its own (~5 ms of its ~30 ms start, on the path of every status on a big tree).
await build({
  entryPoints: { scan_worker: new URL('../core/scan_worker.ts', import.meta.url).pathname },
  outdir: out,
  outExtension: { '.js': '.cjs' },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  logLevel: 'warning',
});
