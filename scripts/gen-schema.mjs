// Regenerates protocol/imz_schema.ts from protocol/imz.proto (run: npm run proto).
// The schema is embedded as a TypeScript module so the CLI needs no file read
// or .proto parser at start-up, under Node and Deno alike.
import protobuf from 'protobufjs';
import { writeFileSync } from 'node:fs';

const root = protobuf.loadSync(new URL('../protocol/imz.proto', import.meta.url).pathname);
const json = JSON.stringify(root.toJSON(), null, 1);
writeFileSync(new URL('../protocol/imz_schema.ts', import.meta.url),
  '// Generated from imz.proto by scripts/gen-schema.mjs: do not edit.\n' +
  `export const schema = ${json} as const;\n`);
