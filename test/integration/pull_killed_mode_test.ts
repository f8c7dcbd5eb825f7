// Review of 367b4f0: a pull killed after it placed files and before it wrote
// the index leaves .imz/placing, and the next run indexes what the list names.
// A chmod the user made in between (the content is still the server's) is a
// change of theirs: it must stay a change to push, as it would be had the
// pull finished. The recovery took the mode on disk as the server's, so the
// push sent nothing and the server kept its mode (the user's chmod lost).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { runReport as out, cleanupAll, imz, jsonLines, pullKilledWhilePlacing, sampleWorld } from '../helpers.ts';

const T = suite('pull: killed while placing files, then a chmod');
T.after.each(cleanupAll);
T.after(cleanupAll);

T('a chmod made to a file a killed pull placed and never indexed is pushed, not taken for the server\'s mode', async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  const { unindexed, tries } = await pullKilledWhilePlacing(a!, b!);
  assert.ok(unindexed.length > 0, `a pull killed with files placed and not indexed (${tries.join('; ')})`);
  const p = unindexed[0]!;
  assert.is(lstatSync(join(a!, p)).mode & 0o777, lstatSync(join(srv, p)).mode & 0o777, 'placed with the server\'s mode');
  assert.is.not(lstatSync(join(srv, p)).mode & 0o777, 0o755);
  // The user makes it executable (its content stays the server's), then pushes.
  chmodSync(join(a!, p), 0o755);
  const pushed = await imz(['push', '-C', a!, '--json']);
  assert.is(pushed.code, 0, out(pushed));
  const ops = jsonLines(pushed.stdout).filter((e) => e.event === 'op').map((e) => `${e.path} ${e.kind} ${e.status}`);
  assert.ok(ops.includes(`${p} setattr applied`), `the chmod is sent (ops: ${ops.join(', ') || 'none'})`);
  assert.is(lstatSync(join(srv, p)).mode & 0o777, 0o755, 'the server has the user\'s mode');
  // Nothing else of what the killed pull placed goes back.
  assert.equal(ops.filter((o) => !o.startsWith(`${p} `) && o.startsWith('batch')), []);
  const status = await imz(['status', '-C', a!, '--json']);
  assert.equal(jsonLines(status.stdout).filter((e) => e.event === 'change'), [], 'a is clean');
});

T.run();
