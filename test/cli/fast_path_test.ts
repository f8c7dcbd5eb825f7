// cli/fast_path.ts: the plain forms of status, push and sync are read
// without yargs, into what yargs hands the same handler; anything else is
// left to yargs. The last test runs the bundled CLI both ways.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fastCommand } from '../../cli/fast_path.ts';
import { commandWord } from '../../cli/command_word.ts';
import { cleanupAll, copyFixture, imz, makeTmp, startServer } from '../helpers.ts';
import { join } from 'node:path';

test('plain forms are read, with the defaults the yargs builders declare', () => {
  assert.equal(fastCommand(['status']), { command: 'status', args: { _: ['status'], $0: 'imz', short: false, offline: false } });
  assert.equal(fastCommand(['status', '-C', 'rep', '--json', '--offline', '-s']), {
    command: 'status', args: { _: ['status'], $0: 'imz', short: true, offline: true, C: 'rep', json: true },
  });
  assert.equal(fastCommand(['-C=/x y', 'push', '--quiet', '--policy', 'server-wins', '--allow-mass-delete', '-v']), {
    command: 'push', args: { _: ['push'], $0: 'imz', allowMassDelete: true, verbose: true, C: '/x y', quiet: true, policy: 'server-wins' },
  });
  assert.equal(fastCommand(['sync', '--watch', '--token-file', 't', '--tls-ca=ca.pem', '--tls', '--tls-fingerprint', 'AB:CD', '-q']), {
    command: 'sync', args: { _: ['sync'], $0: 'imz', allowMassDelete: false, verbose: false, watch: true, tokenFile: 't', tlsCa: 'ca.pem', tls: true, tlsFingerprint: 'AB:CD', quiet: true },
  });
  assert.equal(fastCommand(['status', '-C', 'status'])?.args.C, 'status', 'a directory named like the command');
});

test('the command word is never an option\'s value; after an option of another command it is not sure', () => {
  assert.equal(commandWord(['-C', 'sync', '--json']), { word: undefined, plain: true });
  assert.is(fastCommand(['-C', 'sync', '--json']), undefined, 'a directory named sync, and no command: yargs says so');
  assert.equal(commandWord(['--json', '-C=x', '--token-file', 't', 'status', '--unknown']), { word: 'status', plain: true });
  assert.equal(commandWord(['--state-dir', 'sync', 'serve']), { word: 'sync', plain: false });
  assert.equal(commandWord(['--', 'status']), { word: undefined, plain: true });
  assert.is(fastCommand(['-C', 'status', 'push'])?.args.C, 'status', 'push in a directory named status, as yargs reads it');
});

test('anything else is left to yargs', () => {
  for (const argv of [
    [], ['pull'], ['clone', 'h:1', 'd'], ['status', '--help'], ['status', '--version'], ['status', 'extra'], ['status', 'push'],
    ['status', '--no-json'], ['status', '--json=false'], ['status', '--offline=true'], ['status', '--json', '--json'],
    ['status', '-C'], ['status', '-C', '--json'], ['status', '-C', ''], ['status', '-Crep'], ['status', '--', 'x'],
    ['status', '--policy', 'manual'], ['push', '--offline'], ['push', '--watch'], ['push', '-sv'], ['status', '--unknown'],
    ['push', '--policy'], ['push', '--policy=-x'],
  ]) {
    assert.is(fastCommand(argv), undefined, JSON.stringify(argv));
  }
});

test('the CLI answers the same through both readers', async () => {
  try {
    const tmp = await makeTmp('imz-fast-path-');
    const srv = join(tmp, 'srv');
    await copyFixture('sample', srv);
    const server = await startServer(srv);
    const rep = join(tmp, 'rep');
    assert.is((await imz(['clone', server.address, rep, '--quiet'])).code, 0);
    // A trailing `--` is not a fast form: yargs reads that one.
    const fast = await imz(['status', '-C', rep, '--json', '--offline']);
    const slow = await imz(['status', '-C', rep, '--json', '--offline', '--']);
    assert.is(fast.code, 0, fast.stderr);
    assert.is(slow.code, 0, slow.stderr);
    assert.is(fast.stdout, slow.stdout);
    // A bad policy is the handler's to refuse, the same way both times.
    const badFast = await imz(['push', '-C', rep, '--policy', 'bogus', '--json']);
    const badSlow = await imz(['push', '-C', rep, '--policy', 'bogus', '--json', '--']);
    assert.is(badFast.code, badSlow.code);
    assert.is(badFast.stdout, badSlow.stdout);
  } finally {
    await cleanupAll();
  }
});

test('a scanning command that never scans (help, version, a usage error, no replica) exits at once despite the thread it started first', async () => {
  const tmp = await makeTmp('imz-early-');
  try {
    for (const argv of [['status', '--help'], ['push', '--version'], ['sync', '--no-such-option'], ['status', '-C', tmp], ['push', '-C', join(tmp, 'missing')]]) {
      const started = Date.now();
      const r = await imz(argv, { timeoutMs: 15_000 });
      assert.ok(Date.now() - started < 10_000, `${argv.join(' ')} took ${Date.now() - started} ms`);
      assert.ok(argv[1] === '--help' || argv[1] === '--version' ? r.code === 0 : r.code !== 0, `${argv.join(' ')} exited ${r.code}: ${r.stderr}`);
      if (argv[1] === '-C') assert.match(r.stderr, /cannot/, argv.join(' '));
    }
  } finally {
    await cleanupAll();
  }
});

test.run();
