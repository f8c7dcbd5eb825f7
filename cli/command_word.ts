// The command word of argv, found before yargs parses it (cli/main.ts starts
// the scan's thread on it; cli/fast_path.ts runs the plain forms of status,
// push and sync without yargs).

/** Whether an option takes the next word as its value. */
export type OptionKind = 'flag' | 'value';

/** Options every command takes (name → yargs key, kind). */
export const GLOBAL_OPTIONS: Record<string, [string, OptionKind]> = {
  '--json': ['json', 'flag'], '--quiet': ['quiet', 'flag'], '-q': ['quiet', 'flag'], '--tls': ['tls', 'flag'],
  '-C': ['C', 'value'], '--token-file': ['tokenFile', 'value'], '--tls-ca': ['tlsCa', 'value'], '--tls-fingerprint': ['tlsFingerprint', 'value'],
};

/** push's and sync's own options (name → yargs key, kind). */
export const PUSH_OPTIONS: Record<string, [string, OptionKind]> = {
  '--policy': ['policy', 'value'], '--allow-mass-delete': ['allowMassDelete', 'flag'], '--verbose': ['verbose', 'flag'], '-v': ['verbose', 'flag'],
};

const _named = (kind: OptionKind, ...tables: Array<Record<string, [string, OptionKind]>>) =>
  tables.flatMap((t) => Object.keys(t).filter((name) => t[name]![1] === kind));
/** Options that take the next word as their value: the global ones, and push's and sync's --policy. */
const _VALUED = _named('value', GLOBAL_OPTIONS, PUSH_OPTIONS);
/** Global options that take no value. */
const _FLAGS = _named('flag', GLOBAL_OPTIONS);

/** What commandWord found. */
export interface CommandWord {
  /** The first word that is neither an option nor an option's value (undefined: none before `--` or the end). */
  word: string | undefined;
  /** True when every option before it is a global one, so the word is surely the command. */
  plain: boolean;
}

/** The command word of args (argv without node and the script). */
export function commandWord(args: readonly string[]): CommandWord {
  let plain = true;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return { word: undefined, plain };
    if (!a.startsWith('-')) return { word: a, plain };
    if (_VALUED.includes(a)) i++;
    else if (!_FLAGS.includes(a) && !_VALUED.some((v) => a.startsWith(`${v}=`))) plain = false; // an option of some command: its value unknown
  }
  return { word: undefined, plain };
}
