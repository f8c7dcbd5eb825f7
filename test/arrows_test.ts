import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { posix } from 'node:path';
import { fileURLToPath } from 'node:url';

// Layering and portability rules of DESIGN.md "Layout": arrows point one way
// (cli -> core -> protocol), and the source stays plain ESM that runs
// unchanged on Node and Deno (relative imports name their .ts file, no
// CommonJS, node built-ins only through `node:`).

const ROOT = fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, '');
const LAYERS = ['cli', 'core', 'protocol'] as const;
type Layer = (typeof LAYERS)[number];

/** What each layer must not import. */
const FORBIDDEN: Record<Layer, Layer[]> = { cli: [], core: ['cli'], protocol: ['core', 'cli'] };

const BUILTINS = new Set(builtinModules.filter((m) => !m.startsWith('_')));

// ---------- a small scanner ----------

const REGEX_AFTER_WORD = new Set(['return', 'typeof', 'instanceof', 'in', 'of', 'new', 'delete', 'void', 'throw', 'case', 'do', 'else', 'yield', 'await']);

/**
 * Returns src with comments blanked and the contents of string, template and
 * regex literals blanked (quotes and `${...}` code kept), same length and
 * same line breaks, so positions in the result are positions in src.
 */
function mask(src: string): string {
  const out = src.split('');
  const blank = (from: number, to: number): void => {
    for (let k = from; k < to; k++) if (out[k] !== '\n') out[k] = ' ';
  };
  let i = 0;
  // Brace depth of each open `${` (so the matching `}` resumes the template).
  const templateDepth: number[] = [];
  let depth = 0;
  let lastSignificant = ''; // last non-space code character, to tell a regex from a division
  let lastWord = '';

  const readTemplate = (): void => {
    // At the char after ` or after the } closing a ${...}.
    const start = i;
    while (i < src.length) {
      const c = src[i]!;
      if (c === '\\') { i += 2; continue; }
      if (c === '`') { blank(start, i); i++; lastSignificant = '`'; lastWord = ''; return; }
      if (c === '$' && src[i + 1] === '{') {
        blank(start, i);
        templateDepth.push(depth);
        depth++;
        i += 2;
        lastSignificant = '{';
        lastWord = '';
        return;
      }
      i++;
    }
    blank(start, i);
  };

  while (i < src.length) {
    const c = src[i]!;
    const n = src[i + 1];
    if (c === '/' && n === '/') {
      const end = src.indexOf('\n', i);
      const stop = end < 0 ? src.length : end;
      blank(i, stop);
      i = stop;
      continue;
    }
    if (c === '/' && n === '*') {
      const end = src.indexOf('*/', i + 2);
      const stop = end < 0 ? src.length : end + 2;
      blank(i, stop);
      i = stop;
      continue;
    }
    if (c === '\'' || c === '"') {
      const start = i + 1;
      i++;
      while (i < src.length && src[i] !== c && src[i] !== '\n') i += src[i] === '\\' ? 2 : 1;
      blank(start, Math.min(i, src.length));
      i++;
      lastSignificant = c;
      lastWord = '';
      continue;
    }
    if (c === '`') {
      i++;
      readTemplate();
      continue;
    }
    if (c === '/') {
      const regexCanStart = lastSignificant === '' || '(,=:[!&|?{};+-*%<>~^'.includes(lastSignificant) || REGEX_AFTER_WORD.has(lastWord);
      if (regexCanStart) {
        const start = i + 1;
        i++;
        let inClass = false;
        while (i < src.length && src[i] !== '\n') {
          const r = src[i]!;
          if (r === '\\') { i += 2; continue; }
          if (r === '[') inClass = true;
          else if (r === ']') inClass = false;
          else if (r === '/' && !inClass) break;
          i++;
        }
        blank(start, i);
        i++;
        while (i < src.length && /[a-z]/i.test(src[i]!)) i++; // flags
        lastSignificant = '/';
        lastWord = '';
        continue;
      }
    }
    if (c === '{') depth++;
    if (c === '}') {
      if (templateDepth.length > 0 && templateDepth[templateDepth.length - 1] === depth - 1) {
        templateDepth.pop();
        depth--;
        i++;
        readTemplate();
        continue;
      }
      depth--;
    }
    if (/[A-Za-z_$]/.test(c)) {
      let j = i;
      while (j < src.length && /[\w$]/.test(src[j]!)) j++;
      lastWord = src.slice(i, j);
      lastSignificant = 'a';
      i = j;
      continue;
    }
    if (/\d/.test(c)) {
      while (i < src.length && /[\w.]/.test(src[i]!)) i++;
      lastSignificant = '0';
      lastWord = '';
      continue;
    }
    if (!/\s/.test(c)) {
      lastSignificant = c;
      lastWord = '';
    }
    i++;
  }
  return out.join('');
}

interface Specifier {
  spec: string;
  line: number;
  kind: 'static' | 'dynamic';
}

/** Import and export-from specifiers of a source file, static and dynamic. */
function specifiers(src: string): Specifier[] {
  const m = mask(src);
  const found: Specifier[] = [];
  const lineOf = (pos: number): number => src.slice(0, pos).split('\n').length;
  // The quoted specifier is blanked in the mask; its text is read from src at the same position.
  const add = (quotePos: number, kind: Specifier['kind']): void => {
    const q = src[quotePos]!;
    const end = src.indexOf(q, quotePos + 1);
    found.push({ spec: src.slice(quotePos + 1, end), line: lineOf(quotePos), kind });
  };
  const patterns: [RegExp, Specifier['kind']][] = [
    // import x from '...', import { a, type b } from '...', import * as n from '...', import type X from '...'
    // export { a } from '...', export * from '...', export * as n from '...', export type { T } from '...'
    [/(?<![\w$.])(?:import|export)\s+(?:type\s+)?[\w\s{},*$]*?(?<![\w$])from\s*(['"])/g, 'static'],
    // import '...' (side effect)
    [/(?<![\w$.])import\s*(['"])/g, 'static'],
    // import('...'), await import(`...`)
    [/(?<![\w$.])import\s*\(\s*(['"`])/g, 'dynamic'],
  ];
  for (const [re, kind] of patterns) {
    for (const hit of m.matchAll(re)) add(hit.index! + hit[0].length - 1, kind);
  }
  return found.sort((a, b) => a.line - b.line);
}

function layerOf(relPath: string): Layer | undefined {
  const top = relPath.split('/')[0];
  return (LAYERS as readonly string[]).includes(top!) ? (top as Layer) : undefined;
}

/**
 * Checks one source file (path relative to the project root, '/'-separated).
 * Returns one line per violation, empty when the file is clean.
 */
function checkSource(relPath: string, src: string): string[] {
  const problems: string[] = [];
  const from = layerOf(relPath);
  const masked = mask(src);
  const lineOf = (pos: number): number => src.slice(0, pos).split('\n').length;

  for (const { spec, line, kind } of specifiers(src)) {
    const where = `${relPath}:${line}`;
    if (kind === 'dynamic' && spec.includes('${')) {
      problems.push(`${where}: dynamic import with a computed specifier cannot be checked: ${spec}`);
      continue;
    }
    if (spec.startsWith('./') || spec.startsWith('../') || spec.startsWith('/')) {
      if (!spec.endsWith('.ts')) problems.push(`${where}: relative import without a .ts extension: '${spec}'`);
      const target = spec.startsWith('/')
        ? posix.relative(ROOT, spec)
        : posix.normalize(posix.join(posix.dirname(relPath), spec));
      const to = layerOf(target);
      if (from && to && FORBIDDEN[from].includes(to)) problems.push(`${where}: ${from}/ must not import from ${to}/: '${spec}'`);
      continue;
    }
    const bare = spec.split('/')[0]!;
    if (BUILTINS.has(spec) || BUILTINS.has(bare)) problems.push(`${where}: node built-in without the node: prefix: '${spec}' (write 'node:${spec}')`);
  }
  for (const hit of masked.matchAll(/(?<![\w$.])require\s*\(/g)) problems.push(`${relPath}:${lineOf(hit.index!)}: require( call (use import)`);
  for (const hit of masked.matchAll(/(?<![\w$])__dirname(?![\w$])/g)) problems.push(`${relPath}:${lineOf(hit.index!)}: __dirname (use import.meta.url)`);
  for (const hit of masked.matchAll(/(?<![\w$])__filename(?![\w$])/g)) problems.push(`${relPath}:${lineOf(hit.index!)}: __filename (use import.meta.url)`);
  return problems;
}

/** Every .ts file under dir, recursively, as root-relative '/'-separated paths. */
function tsFiles(rel: string): string[] {
  let entries;
  try {
    entries = readdirSync(posix.join(ROOT, rel), { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: string[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.') || e.name === 'node_modules') continue;
    const p = `${rel}/${e.name}`;
    if (e.isDirectory()) out.push(...tsFiles(p));
    else if (e.isFile() && e.name.endsWith('.ts')) out.push(p);
  }
  return out.sort();
}

// ---------- self-checks: the checker must catch what it claims to ----------

test('self-check: the checker reports each kind of violation', () => {
  const cases: [string, string, RegExp][] = [
    ['core/x.ts', "import { run } from '../cli/main.ts';\n", /core\/ must not import from cli\//],
    ['core/sub/x.ts', "export { a } from '../../cli/commands/pull.ts';\n", /core\/ must not import from cli\//],
    ['protocol/x.ts', "import type { Entry } from '../core/tree.ts';\n", /protocol\/ must not import from core\//],
    ['protocol/x.ts', "import {\n  a,\n  b,\n} from '../cli/out.ts';\n", /protocol\/ must not import from cli\//],
    ['protocol/x.ts', "const m = await import('../core/engine.ts');\n", /protocol\/ must not import from core\//],
    ['protocol/x.ts', 'export * from "../core/all.ts";\n', /protocol\/ must not import from core\//],
    ['core/x.ts', "import { a } from './paths';\n", /without a \.ts extension/],
    ['core/x.ts', "import { a } from './paths.js';\n", /without a \.ts extension/],
    ['cli/x.ts', "const b = await import('./b');\n", /without a \.ts extension/],
    ['cli/x.ts', "const fs = require('node:fs');\n", /require\( call/],
    ['cli/x.ts', "import x = require('y');\n", /require\( call/],
    ['core/x.ts', 'const here = __dirname;\n', /__dirname/],
    ['core/x.ts', "import { readFile } from 'fs';\n", /without the node: prefix: 'fs'/],
    ['core/x.ts', "import net from 'net';\n", /without the node: prefix: 'net'/],
    ['core/x.ts', "import { pipeline } from 'stream/promises';\n", /without the node: prefix: 'stream\/promises'/],
    ['core/x.ts', "import 'crypto';\n", /without the node: prefix: 'crypto'/],
    ['core/x.ts', "const p = await import('path');\n", /without the node: prefix: 'path'/],
  ];
  for (const [file, src, want] of cases) {
    const got = checkSource(file, src);
    assert.ok(got.some((p) => want.test(p)), `${file}: ${JSON.stringify(src)} should report ${want}, got ${JSON.stringify(got)}`);
  }
});

test('self-check: clean sources pass, including look-alikes in comments, strings and regexes', () => {
  const src = [
    "import { readFile } from 'node:fs/promises';",
    "import * as net from 'node:net';",
    "import protobuf from 'protobufjs/light.js';",
    "import chalk from 'chalk';",
    "import type { Entry } from '../protocol/messages.ts';",
    "export { Session } from '../protocol/session.ts';",
    "import { a,",
    "  type B } from './sibling.ts';",
    "// import x from '../cli/main.ts'; const fs = require('fs'); __dirname",
    "/* export * from 'fs'; require('x') */",
    "const s = \"import fs from 'fs'; require('x') __dirname\";",
    "const t = `from '../cli/x.ts' ${ 1 + 2 } import('fs') require(`;",
    "const re = /['\"]require\\(/g; const half = 10 / 2 / 1;",
    "const url = new URL('../x', import.meta.url);",
    "const dyn = await import('./lazy.ts');",
    "const o = { from: 1 }; const from = o.from; x.require(1);",
  ].join('\n');
  assert.equal(checkSource('core/engine.ts', src), []);
  // And the specifiers found are exactly the real ones.
  assert.equal(specifiers(src).map((s) => s.spec).sort(), [
    '../protocol/messages.ts', '../protocol/session.ts', './lazy.ts', './sibling.ts', 'chalk', 'node:fs/promises', 'node:net', 'protobufjs/light.js',
  ]);
});

test('self-check: a mask keeps positions and line breaks', () => {
  const src = "a('x\\'y') // c\n/* d\ne */ `t${ {b: '}'} }u` + /[/]'/.test(z)\n";
  const m = mask(src);
  assert.is(m, "a('    ')     \n    \n     ` ${ {b: ' '} } ` + /    /.test(z)\n");
});

// ---------- the real tree ----------

test('every .ts file under cli/, core/ and protocol/ follows the import rules', () => {
  const files = LAYERS.flatMap((l) => tsFiles(l));
  const protocolFiles = files.filter((f) => f.startsWith('protocol/'));
  assert.ok(protocolFiles.length > 0, 'found the protocol files');
  assert.ok(protocolFiles.includes('protocol/session.ts'), 'walked into protocol/');
  const problems = files.flatMap((f) => checkSource(f, readFileSync(posix.join(ROOT, f), 'utf8')));
  assert.equal(problems, [], `violations:\n${problems.join('\n')}`);
});

test('the protocol files really are scanned (their imports are found)', () => {
  const specs = specifiers(readFileSync(posix.join(ROOT, 'protocol/session.ts'), 'utf8')).map((s) => s.spec);
  assert.ok(specs.includes('./frame_codec.ts'), `session.ts imports found: ${specs.join(', ')}`);
  assert.ok(specs.includes('node:events'));
});

test.run();
