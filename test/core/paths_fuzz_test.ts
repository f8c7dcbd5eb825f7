// Property-based tests of the path validator (core/paths.ts), which stands
// between every path from the wire and the file system on both ends
// (confinement, invariant 3). Whatever it accepts must be a relative,
// normalised path that stays under the root; whatever holds one bad segment
// must be refused, and checkPath must refuse it with IMZ_BAD_PATH only.
import { posix } from 'node:path';
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Codes, ImzError } from '../../protocol/errors.ts';
import { MAX_NAME_BYTES, MAX_PATH_BYTES, checkPath, pathProblem } from '../../core/paths.ts';
import { FuzzSuite } from '../fuzz_config.ts';

const suite = new FuzzSuite('path validator');
test.after(() => suite.report());

const ROOT = '/srv/imz-root';
const bytesOf = (s: string) => Buffer.byteLength(s, 'utf8');
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const RESERVED = (seg: string) => seg === '.imz' || seg === '.imz-server' || seg.startsWith('.imz-tmp-');

/** Everything an accepted path must be. */
function assertSafe(p: unknown, allowRoot: boolean): void {
  assert.type(p, 'string');
  const s = p as string;
  if (s === '') {
    assert.ok(allowRoot, 'the root accepted where not allowed');
    return;
  }
  const why = JSON.stringify(s).slice(0, 120);
  assert.not.ok(s.startsWith('/'), `absolute: ${why}`);
  assert.is(posix.normalize(s), s, `not normalised: ${why}`);
  assert.not.ok(CONTROL.test(s), `control character: ${why}`);
  assert.ok(bytesOf(s) <= MAX_PATH_BYTES, `too long: ${why}`);
  for (const seg of s.split('/')) {
    assert.ok(seg !== '' && seg !== '.' && seg !== '..', `bad segment ${JSON.stringify(seg)} in ${why}`);
    assert.not.ok(RESERVED(seg), `reserved segment ${JSON.stringify(seg)} in ${why}`);
    assert.ok(bytesOf(seg) <= MAX_NAME_BYTES, `name too long in ${why}`);
  }
  const abs = posix.join(ROOT, s);
  assert.ok(abs.startsWith(`${ROOT}/`), `escapes the root: ${why} -> ${abs}`);
  assert.is(posix.relative(ROOT, abs), s, `does not map back: ${why}`);
  // checkPath agrees and hands the path back unchanged.
  assert.is(checkPath(s, 'test', allowRoot), s);
}

/** Asserts p is refused by both entry points, checkPath with IMZ_BAD_PATH only. */
function assertRefused(p: unknown, allowRoot: boolean): void {
  const why = typeof p === 'string' ? JSON.stringify(p).slice(0, 120) : typeof p;
  assert.type(pathProblem(p, allowRoot), 'string', `accepted ${why}`);
  try {
    checkPath(p, 'test', allowRoot);
  } catch (err) {
    if (!(err instanceof ImzError)) throw new Error(`checkPath threw ${(err as Error)?.constructor?.name} instead of an ImzError for ${why}`);
    assert.is(err.code, Codes.BAD_PATH);
    assert.not.ok(err.message.includes('\n'), 'one-line message');
    return;
  }
  assert.unreachable(`checkPath accepted ${why}`);
}

// ---------- arbitraries ----------

/** Characters that matter to paths, plus anything at all. */
const charArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('a', 'b', 'Z', '0', '-', '_', ' ', '~', 'é', 'ü', '日', '😀', '\\', ':', '*') },
  { weight: 3, arbitrary: fc.constantFrom('.', '/', '..', '//', './', '/.', '\u0000', '\n', '\r', '\t', '\u001f', '\u007f', '\u0085', '\u2028', '\uFEFF') },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 1, arbitrary: fc.constantFrom('.imz', '.imz-server', '.imz-tmp-', '.imz-tmp-x', '.imzignore', '.imz-', 'imz') },
);
/** Strings assembled from those characters: reach '..', '.imz', '//', ... often. */
const wildArb = fc.array(charArb, { maxLength: 24 }).map((a) => a.join(''));

/** A segment that is fine on its own. */
const goodSegArb = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_. -]{0,20}$/),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }).filter((s) => !s.includes('/') && pathProblem(s) === undefined),
  fc.constantFrom('a..b', '...', '.hidden', '.imzignore', '.imz-tmp', 'imz-tmp-x', '.imz-serverx', 'x.imz', '-', '~'),
);

/** A segment that must be refused wherever it appears. */
const badSegArb = fc.oneof(
  fc.constantFrom('', '.', '..', '.imz', '.imz-server'),
  fc.string({ maxLength: 10 }).map((s) => `.imz-tmp-${s.replace(/\//g, '')}`),
  fc.tuple(fc.string({ maxLength: 6 }), fc.integer({ min: 0, max: 0x1f }), fc.string({ maxLength: 6 })).map(([a, c, b]) => `${a}${String.fromCharCode(c)}${b}`.replace(/\//g, '')),
  fc.tuple(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 })).map(([a, b]) => `${a}\u007f${b}`.replace(/\//g, '')),
  fc.integer({ min: MAX_NAME_BYTES + 1, max: MAX_NAME_BYTES + 40 }).map((n) => 'n'.repeat(n)),
  fc.integer({ min: Math.floor(MAX_NAME_BYTES / 3) + 1, max: 120 }).map((n) => '日'.repeat(n)), // 3 bytes a character
);

// ---------- properties ----------

test('anything accepted is relative, normalised, free of bad segments and stays under the root', () => {
  const arb = fc.record({
    parts: fc.array(fc.oneof(wildArb, goodSegArb), { maxLength: 8 }),
    joiner: fc.constantFrom('/', '/', '/', '//', '/./', ''),
    lead: fc.constantFrom('', '', '', '/', './', '../'),
    allowRoot: fc.boolean(),
  });
  suite.check(arb, ({ parts, joiner, lead, allowRoot }) => {
    const p = lead + parts.join(joiner);
    if (pathProblem(p, allowRoot) === undefined) assertSafe(p, allowRoot);
    else assertRefused(p, allowRoot);
  }, 4);
});

test('a path of good segments is accepted; the same path with one bad segment inserted anywhere is refused', () => {
  const arb = fc.record({ segs: fc.array(goodSegArb, { minLength: 1, maxLength: 8 }), bad: badSegArb, at: fc.nat(), allowRoot: fc.boolean() });
  suite.check(arb, ({ segs, bad, at, allowRoot }) => {
    const good = segs.join('/');
    if (bytesOf(good) <= MAX_PATH_BYTES) assertSafe(good, allowRoot);
    const withBad = [...segs];
    withBad.splice(at % (segs.length + 1), 0, bad);
    assertRefused(withBad.join('/'), allowRoot);
    assertRefused(`/${good}`, allowRoot);
    assertRefused(`${good}/`, allowRoot);
  }, 3);
});

test('paths over the byte limit are refused even when every segment is fine', () => {
  const arb = fc.record({ seg: goodSegArb, extra: fc.integer({ min: 1, max: 300 }) });
  suite.check(arb, ({ seg, extra }) => {
    const n = Math.ceil((MAX_PATH_BYTES + extra) / (bytesOf(seg) + 1));
    const p = Array.from({ length: n }, () => seg).join('/');
    if (bytesOf(p) > MAX_PATH_BYTES) assertRefused(p, true);
    else assertSafe(p, true);
  }, 0.5);
});

// The validator walks char codes for speed; this is its definition, written plainly (encode, split), which it must
// match answer for answer, the reason given included.
function plainProblem(p: string, allowRoot: boolean): string | undefined {
  if (p === '') return allowRoot ? undefined : 'empty path';
  if (bytesOf(p) > MAX_PATH_BYTES) return 'path too long';
  if (p.startsWith('/')) return 'absolute path';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(p)) return 'control character in path';
  for (const seg of p.split('/')) {
    if (seg === '') return 'empty path segment';
    if (seg === '.' || seg === '..') return `'${seg}' segment`;
    if (RESERVED(seg)) return `reserved name '${seg}'`;
    if (bytesOf(seg) > MAX_NAME_BYTES) return 'name too long';
  }
  return undefined;
}

test('the validator gives the answer of its plain definition and reason for any string, lone surrogates and long names included', () => {
  const longArb = fc.tuple(fc.constantFrom('a', '日', '😀', '\uD800', '\uDC00', 'é'), fc.integer({ min: 60, max: 1500 })).map(([c, n]) => c.repeat(n));
  const arb = fc.record({
    parts: fc.array(fc.oneof({ weight: 4, arbitrary: wildArb }, { weight: 2, arbitrary: goodSegArb }, { weight: 2, arbitrary: badSegArb }, { weight: 1, arbitrary: longArb }), { maxLength: 8 }),
    joiner: fc.constantFrom('/', '/', '//', ''),
    allowRoot: fc.boolean(),
  });
  suite.check(arb, ({ parts, joiner, allowRoot }) => {
    const p = parts.join(joiner);
    assert.is(pathProblem(p, allowRoot), plainProblem(p, allowRoot), JSON.stringify(p).slice(0, 120));
  }, 4);
});

test('values that are not strings are refused, and checkPath throws IMZ_BAD_PATH for every one', () => {
  const arb = fc.oneof(fc.anything({ withNullPrototype: true, withBoxedValues: true, withMap: true, withSet: true, withBigInt: true, withTypedArray: true }), fc.constantFrom(undefined, null, 0, NaN, [], {}, ['a'], Symbol('s')));
  suite.check(arb, (v) => {
    if (typeof v === 'string') return;
    assertRefused(v, true);
    assertRefused(v, false);
  });
});

test.run();
