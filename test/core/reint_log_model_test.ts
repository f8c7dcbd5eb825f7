import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LOG_HEADER, type LoggedOp, decodeLog, encodeLogRecord, pendingOps } from '../../core/reint_log_model.ts';

const op = (seq: number, path = `f${seq}`): LoggedOp => ({
  seq, kind: 1, path, fromPath: '', base: 0, fromBase: 0, state: { type: 1, size: 3, mode: 0o644, mtimeMs: 1.7e12, hash: 'ab'.repeat(32), target: '' },
});

test('records round-trip through checksummed lines', () => {
  const text = `${LOG_HEADER}\n` + [encodeLogRecord({ t: 'op', op: op(1, 'ü/x') }), encodeLogRecord({ t: 'sent', upto: 1 })].join('');
  const d = decodeLog(text);
  assert.is(d.torn, false);
  assert.equal(d.records, [{ t: 'op', op: op(1, 'ü/x') }, { t: 'sent', upto: 1 }]);
  assert.is(d.validBytes, Buffer.byteLength(text));
});

test('a torn or damaged tail is cut at every byte, never half-read', () => {
  const lines = [encodeLogRecord({ t: 'op', op: op(1) }), encodeLogRecord({ t: 'op', op: op(2) }), encodeLogRecord({ t: 'done', upto: 2 })];
  const full = `${LOG_HEADER}\n${lines.join('')}`;
  const ends = [LOG_HEADER.length + 1];
  for (const l of lines) ends.push(ends[ends.length - 1]! + l.length);
  for (let cut = ends[0]!; cut < full.length; cut++) {
    const d = decodeLog(full.slice(0, cut));
    const whole = ends.filter((e) => e <= cut).length - 1;
    assert.is(d.records.length, whole, `cut at ${cut}`);
    assert.is(d.validBytes, ends[whole]);
  }
  const flipped = full.replace('"f2"', '"f3"');
  assert.is(decodeLog(flipped).records.length, 1);
});

test('pending ops: sent ones are kept as they are, dropped and done ones are not owed', () => {
  const recs = [
    { t: 'op' as const, op: op(1) }, { t: 'op' as const, op: op(2) }, { t: 'sent' as const, upto: 2 }, { t: 'done' as const, upto: 1 },
    { t: 'op' as const, op: op(3) }, { t: 'drop' as const, upto: 3 }, { t: 'op' as const, op: op(4) },
  ];
  const p = pendingOps(recs);
  assert.equal(p.sent.map((o) => o.seq), [2]);
  assert.equal(p.unsent.map((o) => o.seq), [4]);
});

test('pending ops: a sent mark after a drop (the newer operations sent) does not bring the dropped ones back', () => {
  // An offline push logged 3 and 4; the next one dropped them, logged 5 and 6, marked them sent, and was cut off.
  const recs = [
    { t: 'op' as const, op: op(1) }, { t: 'sent' as const, upto: 1 },
    { t: 'op' as const, op: op(3) }, { t: 'op' as const, op: op(4) },
    { t: 'drop' as const, upto: 4 }, { t: 'op' as const, op: op(5) }, { t: 'op' as const, op: op(6) }, { t: 'sent' as const, upto: 6 },
  ];
  const p = pendingOps(recs);
  // 1 was sent before the drop and stays owed as sent (it may have reached the server); 3 and 4 are gone for good.
  assert.equal(p.sent.map((o) => o.seq), [1, 5, 6]);
  assert.equal(p.unsent.map((o) => o.seq), []);
  // Before the sent mark: 5 and 6 unsent, 3 and 4 still dropped.
  const q = pendingOps(recs.slice(0, -1));
  assert.equal(q.sent.map((o) => o.seq), [1]);
  assert.equal(q.unsent.map((o) => o.seq), [5, 6]);
});

test.run();
