// A pull killed (SIGKILL) after it put files in the tree and before it wrote
// the index: the next run indexes them as the server's (they are listed in
// .imz/placing first), so a push after the other replica removed them does
// not send them back, and the next pull removes them here too. (Crash rounds
// found the push resurrecting them; left open for several sessions.)
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runReport as out, cleanupAll, imz, jsonLines, pullKilledWhilePlacing, sampleWorld } from '../helpers.ts';

const T = suite('pull: killed while placing files');
T.after.each(cleanupAll);
T.after(cleanupAll);

T('files a killed pull placed and never indexed are indexed by the next run: a push then sends none back once the server removed them, and a pull removes them', async () => {
  const { srv, replicas: [a, b] } = await sampleWorld(2);
  // Kill a's pull of b's new files once some are in a's tree and its index is not written yet.
  const { rounds, placed, unindexed, tries } = await pullKilledWhilePlacing(a!, b!);
  assert.ok(unindexed.length > 0, `a pull killed with files placed and not indexed (${tries.join('; ')})`);
  assert.ok(existsSync(join(a!, '.imz', 'placing')), 'the list of what was being placed is there');

  // Meanwhile b removes everything it pushed; the server journals the removals.
  for (let round = 0; round < rounds; round++) await rm(join(b!, `batch${round}`), { recursive: true, force: true });
  const removed = await imz(['push', '-C', b!, '--quiet', '--allow-mass-delete']);
  assert.is(removed.code, 0, out(removed));

  // a pushes: what the killed pull placed is the server's, not a's: nothing of it goes back.
  const pushed = await imz(['push', '-C', a!, '--json']);
  assert.is(pushed.code, 0, out(pushed));
  const sent = jsonLines(pushed.stdout).filter((e) => e.event === 'op').map((e) => String(e.path));
  assert.equal(sent.filter((p) => p.startsWith('batch')), [], 'no placed file pushed back');
  assert.not.ok(existsSync(join(a!, '.imz', 'placing')), 'the list is gone once indexed');
  for (const p of unindexed.slice(0, 50)) assert.not.ok(existsSync(join(srv, p)), `${p} stays removed on the server`);

  // And the next pull removes them here.
  const pulled = await imz(['pull', '-C', a!, '--quiet']);
  assert.is(pulled.code, 0, out(pulled));
  for (const p of placed) assert.not.ok(existsSync(join(a!, p)), `${p} removed here too`);
  const status = await imz(['status', '-C', a!, '--json']);
  assert.equal(jsonLines(status.stdout).filter((e) => e.event === 'change'), [], 'a is clean');
});

T.run();
