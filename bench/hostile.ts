// Hostile load on a real `imz serve` (issue 5's figures): server memory under
// a flood of bad connections, and how long a stalled handshake is kept.
//
//   npm run bench:hostile                 build, then the default run
//   npx tsx bench/hostile.ts --connections 1000 --rounds 3
//
// The server serves a small tree with tokens (as a network-facing server
// would) and default limits except --max-connections-per-address, raised so
// that every bad connection from loopback is let in and held. Each round
// opens N connections at once, a quarter of each kind: silent; half a frame
// then stall; garbage bytes; a HELLO then a declared 60 KiB frame that
// never ends (the most a stranger can make the server buffer before AUTH).
// Then: one well-behaved client must still be served quickly, the server's
// VmRSS is read at the peak, and after the handshake deadline every bad
// connection must be gone. The Markdown table goes to stdout.
import { connect, type Socket } from 'node:net';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeFrame } from '../protocol/frame_codec.ts';
import { Op, encodeEnvelope } from '../protocol/messages.ts';
import { Remote } from '../core/remote.ts';
import { killAllSync, log, parseCli, startJsonServer, stopAll, useRegistry } from './proc.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = dirname(HERE);
const USAGE = `usage: npx tsx bench/hostile.ts [--connections N] [--rounds R] [--handshake-timeout S]

  --connections N        bad connections per round (default 1000)
  --rounds R             rounds (default 3)
  --handshake-timeout S  the server's handshake deadline in seconds (default 10, the server's default)`;
const opts = parseCli({
  connections: { type: 'string', default: '1000' },
  rounds: { type: 'string', default: '3' },
  'handshake-timeout': { type: 'string', default: '10' },
  help: { type: 'boolean', default: false },
}, USAGE);
const N = Number(opts.connections);
const ROUNDS = Number(opts.rounds);
const HANDSHAKE_S = Number(opts['handshake-timeout']);
const TOKEN = 'bench-token-0123456789abcdef';

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function open(port: number): Promise<Socket> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    // Read (and drop) what the server says, so its end of the stream is seen.
    s.resume();
    s.once('connect', () => res(s));
    s.once('close', () => res(s));
  });
}

function badBytes(kind: number): Uint8Array[] {
  const hello = encodeFrame(encodeEnvelope({ xid: 1, op: Op.HELLO, hello: { version: 1, maxFrame: 1 << 24, client: 'flood', replicaId: '' } }));
  switch (kind) {
    case 0: return [];
    case 1: return [hello.subarray(0, 6)];
    case 2: return [new Uint8Array(64).map((_, i) => (i * 37 + 11) & 0xff)];
    default: {
      const head = new Uint8Array(4);
      new DataView(head.buffer).setUint32(0, 60 * 1024);
      return [hello, head, new Uint8Array(60 * 1024 - 1)];
    }
  }
}

async function main(): Promise<void> {
  const work = join(os.tmpdir(), `imz-bench-hostile-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(join(work, 'tree'), { recursive: true });
  for (let i = 0; i < 50; i++) writeFileSync(join(work, 'tree', `f${i}.txt`), `file ${i}\n`.repeat(20));
  writeFileSync(join(work, 'tokens'), `${TOKEN}\n`);
  useRegistry(join(HERE, '.hostile-registry.json'), log);
  const server = await startJsonServer(process.execPath, [
    join(REPO, 'dist', 'imz.js'), 'serve', join(work, 'tree'), '--port', '0', '--json', '--token-file', join(work, 'tokens'),
    '--max-connections-per-address', String(N + 100), '--max-connections', String(N + 100), '--handshake-timeout', String(HANDSHAKE_S),
  ], join(work, 'server.log'), work, 30_000);
  const addr = `127.0.0.1:${server.port}`;
  const rows: string[] = [];
  const base = rssMb(server.pid);
  log(`server ${server.pid} on ${addr}, RSS ${base.toFixed(1)} MB`);
  for (let round = 1; round <= ROUNDS; round++) {
    const t0 = performance.now();
    const socks: Socket[] = [];
    const closedAt: number[] = [];
    for (let i = 0; i < N; i += 100) {
      const tBatch = performance.now();
      const batch = await Promise.all(Array.from({ length: Math.min(100, N - i) }, () => open(server.port)));
      batch.forEach((s, j) => {
        const k = (i + j) % 4;
        for (const b of badBytes(k)) s.write(b);
        if (k === 1) s.once('close', () => closedAt.push(performance.now() - tBatch));
      });
      socks.push(...batch);
    }
    const opened = performance.now();
    await new Promise((r) => setTimeout(r, 500));
    const peak = rssMb(server.pid);
    // A well-behaved client during the flood.
    const g0 = performance.now();
    const r = await Remote.connect(addr, { token: TOKEN, timeoutMs: 10_000 });
    await r.stat('f1.txt');
    r.close();
    const goodMs = performance.now() - g0;
    // Wait for the deadline to close them all.
    const deadline = performance.now() + HANDSHAKE_S * 1000 + 5000;
    while (socks.some((s) => !s.destroyed && s.readyState !== 'closed') && performance.now() < deadline) await new Promise((res) => setTimeout(res, 200));
    const left = socks.filter((s) => !s.destroyed && s.readyState !== 'closed').length;
    for (const s of socks) s.destroy();
    const stalled = closedAt;
    stalled.sort((a, b) => a - b);
    const after = rssMb(server.pid);
    log(`round ${round}: ${N} bad connections in ${((opened - t0) / 1000).toFixed(2)} s, peak RSS ${peak.toFixed(1)} MB, good client ${goodMs.toFixed(0)} ms, ${left} left open`);
    rows.push(`| ${round} | ${N} | ${base.toFixed(1)} | ${peak.toFixed(1)} | ${((peak - base) * 1024 / N).toFixed(1)} | ${after.toFixed(1)} | ${goodMs.toFixed(0)} | ${stalled.length ? `${(stalled[0]! / 1000).toFixed(2)}–${(stalled[stalled.length - 1]! / 1000).toFixed(2)}` : '—'} | ${left} |`);
  }
  await stopAll();
  rmSync(work, { recursive: true, force: true });
  console.log(`\nimz serve with tokens, handshake deadline ${HANDSHAKE_S} s; ${N} bad connections per round (silent / half a frame / garbage / HELLO + unfinished 60 KiB frame).\n`);
  console.log('| round | bad connections | RSS before MB | RSS peak MB | KB per bad connection | RSS after MB | good client during flood ms | stalled handshake closed after s | left open |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |');
  for (const row of rows) console.log(row);
}

process.on('exit', killAllSync);
main().catch(async (err) => {
  console.error(`bench/hostile: ${(err as Error).stack ?? err}`);
  await stopAll(2000);
  process.exit(1);
});
