// The `imz` command line (yargs), loaded by cli/main.ts once the scan's
// worker is on its way. Only cli/ parses argv, prints and exits.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { VERSION } from '../core/version.ts';
import { Exit } from './exit_codes.ts';
import { cloneCommand } from './commands/clone.ts';
import { pullCommand } from './commands/pull.ts';
import { displacedCommand } from './commands/displaced.ts';
import { pushCommand } from './commands/push.ts';
import { resolveCommand } from './commands/resolve.ts';
import { syncCommand } from './commands/sync.ts';
import { serveCommand } from './commands/serve.ts';
import { statusCommand } from './commands/status.ts';
import { catCommand } from './commands/cat.ts';
import { evictCommand } from './commands/evict.ts';
import { getCommand } from './commands/get.ts';
import { lsCommand } from './commands/ls.ts';
import type { GlobalArgs } from './output.ts';

const cli = yargs(hideBin(process.argv))
  .scriptName('imz')
  .usage('imz <command> [options]\n\nInterMezzo for today: replicas that catch up by replaying a journal.')
  .option('C', { type: 'string', describe: 'operate on the replica at DIR', requiresArg: true, global: true })
  .option('json', { type: 'boolean', describe: 'one JSON object per line on stdout, nothing else', global: true })
  .option('quiet', { alias: 'q', type: 'boolean', describe: 'print only warnings and errors', global: true })
  .option('token-file', { type: 'string', describe: 'file holding the access token (or set IMZ_TOKEN); for serve, the read-write tokens, one per line', requiresArg: true, global: true })
  .option('tls', { type: 'boolean', describe: 'connect over TLS, trusting the system\'s certificate authorities', global: true })
  .option('tls-ca', { type: 'string', describe: 'connect over TLS, trusting the CA certificate in FILE (PEM)', requiresArg: true, global: true })
  .option('tls-fingerprint', { type: 'string', describe: 'connect over TLS, trusting only the certificate with this SHA-256 fingerprint', requiresArg: true, global: true })
  .command(serveCommand as never)
  .command(cloneCommand as never)
  .command(pullCommand as never)
  .command(statusCommand as never)
  .command(pushCommand as never)
  .command(syncCommand as never)
  .command(displacedCommand as never)
  .command(resolveCommand as never)
  .command(lsCommand as never)
  .command(getCommand as never)
  .command(catCommand as never)
  .command(evictCommand as never)
  .demandCommand(1, 'imz needs a command: serve, clone, pull, push, sync, status, resolve, displaced, ls, get, cat or evict')
  .strict()
  .version(VERSION)
  .help()
  .wrap(Math.min(100, process.stdout.columns || 100))
  .epilogue('Exit codes: 0 done; 1 failed; 2 bad usage; 3 done, but conflicts remain; 4 server unreachable.')
  .fail((msg, err, y) => {
    // Our own errors pass through to the command's handler; yargs' are usage errors.
    if (err && (err as { code?: string }).code?.startsWith('IMZ_')) throw err;
    const argv = process.argv.slice(2);
    const json = argv.includes('--json');
    const why = (msg || err?.message || 'invalid arguments').split('\n').join('; ');
    const line = `cannot parse the command line: ${why} (see imz --help)`;
    if (json) process.stdout.write(JSON.stringify({ event: 'error', code: 'IMZ_USAGE', message: line }) + '\n');
    process.stderr.write(`imz: ${line}\n`);
    void y;
    process.exit(Exit.USAGE);
  });

// yargs lays out the whole help text after starting every command, in case
// that command fails and help is to be shown (17 ms of every run here). Ours
// report their own failures in one line and never show it: skip the layout.
const usage = (cli as unknown as { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: () => void } } }).getInternalMethods?.().getUsageInstance?.();
if (typeof usage?.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => {};

/** Parses the command line and runs the command. */
export async function runCli(): Promise<void> {
  await cli.parseAsync();
}

export type { GlobalArgs };
