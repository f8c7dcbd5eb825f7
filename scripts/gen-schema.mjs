// Regenerates protocol/imz_schema.ts and protocol/imz_codec.ts from
// protocol/imz.proto (run: npm run proto; with --check it only says, by its
// exit status, whether both are up to date).
// - imz_schema.ts: the schema as data (tests derive arbitraries and checks from it).
// - imz_codec.ts: static encoders and decoders (pbjs), used at run time with
//   protobufjs/minimal: no reflection to build and no code to generate at
//   start-up, which saves every command about 15 ms. It is plain JavaScript
//   in a .ts file (@ts-nocheck) so Node, Deno, tsc and esbuild all take it as is.
import protobuf from 'protobufjs';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const proto = new URL('../protocol/imz.proto', import.meta.url).pathname;
const root = protobuf.loadSync(proto);
const json = JSON.stringify(root.toJSON(), null, 1);
const outputs = [
  [new URL('../protocol/imz_schema.ts', import.meta.url), '// Generated from imz.proto by scripts/gen-schema.mjs: do not edit.\n' + `export const schema = ${json} as const;\n`],
  [new URL('../protocol/imz_codec.ts', import.meta.url), codecSource(proto)],
];
if (process.argv.includes('--check')) {
  const stale = outputs.filter(([file, text]) => readFileSync(file, 'utf8') !== text).map(([file]) => file.pathname);
  if (stale.length > 0) {
    console.error(`out of date (run npm run proto): ${stale.join(', ')}`);
    process.exit(1);
  }
} else {
  for (const [file, text] of outputs) writeFileSync(file, text);
}

// The static codec module for a .proto file.
function codecSource(protoFile) {
  const dir = mkdtempSync(join(tmpdir(), 'imz-pbjs-'));
  try {
    const out = join(dir, 'codec.js');
    const pbjs = new URL('../node_modules/protobufjs-cli/bin/pbjs', import.meta.url).pathname;
    execFileSync(process.execPath, [pbjs, '-t', 'static-module', '-w', 'es6', '--no-create', '--no-verify', '--no-convert', '--no-delimited',
      '--no-typeurl', '--no-service', '--force-number', '--no-comments', '-o', out, protoFile], { stdio: ['ignore', 'ignore', 'inherit'] });
    const js = readFileSync(out, 'utf8').replace(/^\/\*eslint-disable[^\n]*\n/, '');
    return '// @ts-nocheck\n// Generated from imz.proto by scripts/gen-schema.mjs: do not edit.\n' + js;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
