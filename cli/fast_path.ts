import { GLOBAL_OPTIONS, type OptionKind, PUSH_OPTIONS, commandWord } from './command_word.ts';
import type { GlobalArgs } from './output.ts';

/**
 * The command lines cron and CI run every few minutes (`imz status`,
 * `imz push`, `imz sync`, with their plain options) read without yargs:
 * loading and building the full parser is ~25 ms of a 0.2 s status. Only
 * exact, unambiguous forms are taken; anything else (help, version, a
 * repeated, negated or unknown option, a stray argument) goes to yargs,
 * which also reports usage errors. The arguments built are what yargs
 * would hand the same command's handler.
 */
export interface FastCommand {
  command: 'status' | 'push' | 'sync';
  args: GlobalArgs & Record<string, unknown>;
}

/** Each fast command's own options (name → yargs key, kind); the global ones are GLOBAL_OPTIONS. */
const _OWN: Record<FastCommand['command'], Record<string, [string, OptionKind]>> = {
  status: { '--short': ['short', 'flag'], '-s': ['short', 'flag'], '--offline': ['offline', 'flag'] },
  push: PUSH_OPTIONS,
  sync: { ...PUSH_OPTIONS, '--watch': ['watch', 'flag'] },
};
/** The defaults each command's yargs builder declares. */
const _DEFAULTS: Record<FastCommand['command'], Record<string, unknown>> = {
  status: { short: false, offline: false },
  push: { allowMassDelete: false, verbose: false },
  sync: { allowMassDelete: false, verbose: false, watch: false },
};

/** The fast form of argv (without node and the script), or undefined for yargs to parse. */
export function fastCommand(argv: readonly string[]): FastCommand | undefined {
  const word = commandWord(argv).word;
  if (word !== 'status' && word !== 'push' && word !== 'sync') return undefined;
  const command: FastCommand['command'] = word;
  const args: Record<string, unknown> = { _: [command], $0: 'imz', ..._DEFAULTS[command] };
  const seen = new Set<string>();
  let commandSeen = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === command && !commandSeen) {
      commandSeen = true;
      continue;
    }
    const eq = a.startsWith('--') || a.startsWith('-C=') ? a.indexOf('=') : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    const spec = GLOBAL_OPTIONS[name] ?? _OWN[command][name];
    if (!spec || seen.has(spec[0])) return undefined;
    seen.add(spec[0]);
    const [key, kind] = spec;
    if (kind === 'flag') {
      if (eq > 0) return undefined; // --json=false and the like: yargs' business
      args[key] = true;
      continue;
    }
    const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined || value === '' || value.startsWith('-')) return undefined;
    args[key] = value;
  }
  return { command, args: args as FastCommand['args'] };
}

/** Runs a fast command's handler, the one yargs would call. */
export async function runFast(fast: FastCommand): Promise<void> {
  const mod = fast.command === 'status' ? await import('./commands/status.ts') : fast.command === 'push' ? await import('./commands/push.ts') : await import('./commands/sync.ts');
  const cmd = 'statusCommand' in mod ? mod.statusCommand : 'pushCommand' in mod ? mod.pushCommand : mod.syncCommand;
  await (cmd.handler as (args: unknown) => void | Promise<void>)(fast.args);
}
