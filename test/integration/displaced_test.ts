// Versions displaced on the server by client-wins conflicts can be listed
// and restored there (`imz displaced DIR`), and the restore replicates.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cleanupAll, imz, jsonLines, sampleWorld, waitFor } from '../helpers.ts';

const T = suite('displaced versions');
T.after.each(cleanupAll);
T.after(cleanupAll);

T('client-wins keeps the server version; imz displaced lists it and --restore puts it back, and replicas pull it', async () => {
  const { srv, replicas } = await sampleWorld(2);
  const [a, b] = replicas as [string, string];
  await writeFile(join(a, 'docs', 'kml.txt'), 'from a\n');
  assert.is((await imz(['push', '-C', a])).code, 0);
  await writeFile(join(b, 'docs', 'kml.txt'), 'from b\n');
  const pb = await imz(['push', '-C', b, '--policy', 'client-wins']);
  assert.is(pb.code, 0, pb.stderr);
  assert.is(await readFile(join(srv, 'docs', 'kml.txt'), 'utf8'), 'from b\n');

  const list = await imz(['displaced', srv, '--json']);
  assert.is(list.code, 0, list.stderr);
  const items = jsonLines(list.stdout).filter((e) => e.event === 'displaced');
  assert.is(items.length, 1);
  assert.is(items[0]!.path, 'docs/kml.txt');

  const r = await imz(['displaced', srv, '--restore', '1']);
  assert.is(r.code, 0, r.stderr);
  assert.is(await readFile(join(srv, 'docs', 'kml.txt'), 'utf8'), 'from a\n', 'the displaced version is back');
  // What the restore replaced is displaced in turn: nothing is lost.
  const again = jsonLines((await imz(['displaced', srv, '--json'])).stdout).filter((e) => e.event === 'displaced');
  assert.is(again.length, 2);
  // The running server journals the restore; a replica pulls it.
  await waitFor(async () => {
    await imz(['pull', '-C', a]);
    return (await readFile(join(a, 'docs', 'kml.txt'), 'utf8')) === 'from a\n';
  }, 5000, 'replica a to pull the restored version');

  const bad = await imz(['displaced', srv, '--restore', '9']);
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /cannot restore displaced version 9/);
});

T.run();
