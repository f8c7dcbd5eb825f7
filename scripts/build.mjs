// Bundles the CLI into dist/ with esbuild so `imz` starts fast under plain node.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

const out = new URL('../dist/', import.meta.url).pathname;
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
// One CommonJS script: node starts it without its ES module loader (~10 ms of every start, with ~40 modules to
// resolve and link one by one), and V8 can cache its compiled code (scripts/imz_loader.cjs). ESM-only packages
// (chalk, ora, yargs) are bundled in, converted; what a command does not use is only evaluated when required.
await build({
  entryPoints: { 'imz.bundle': new URL('../cli/main.ts', import.meta.url).pathname },
  outdir: out,
  outExtension: { '.js': '.cjs' },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  logLevel: 'warning',
  // import() of what is not bundled (node:tls) becomes require(): the loader's script has no ES module loader to ask.
  supported: { 'dynamic-import': false },
  define: { 'import.meta.url': '__imzUrl' },
  // string-width's Unicode tables cost ~40 ms per start; help layout needs far less.
  // long compiles a WebAssembly module at load (~4 ms per start) for 64-bit fields imz's messages do not have.
  alias: { 'string-width': new URL('./string-width-lite.mjs', import.meta.url).pathname, long: new URL('./long-none.cjs', import.meta.url).pathname },
  banner: { js: "const __imzUrl = require('node:url').pathToFileURL(__filename).href;" },
});
// dist/ holds CommonJS, whatever the package's own type.
writeFileSync(out + 'package.json', '{ "type": "commonjs" }\n');
const buildId = createHash('sha256').update(readFileSync(out + 'imz.bundle.cjs')).digest('hex').slice(0, 16);
const loader = readFileSync(new URL('./imz_loader.cjs', import.meta.url), 'utf8');
if (!loader.includes("'__IMZ_BUILD__'")) throw new Error('scripts/imz_loader.cjs has no build id to fill in');
writeFileSync(out + 'imz.js', loader.replace("'__IMZ_BUILD__'", `'${buildId}'`));
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

// The code cache, written by a first run (the loader writes it at exit when there is none): made here, where
// dist/ can be written, with the node that built it.
const primed = spawnSync(process.execPath, [out + 'imz.js', '--version'], { encoding: 'utf8', env: { ...process.env, IMZ_NO_CODE_CACHE: '' } });
if (primed.status !== 0) throw new Error(`dist/imz.js --version failed (${primed.status}): ${primed.stderr}`);
