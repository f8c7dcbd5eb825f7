// The command word of argv, found before yargs parses it (cli/main.ts starts
// the scan's thread on it; cli/fast_path.ts runs the plain forms of status,
// push and sync without yargs).

/** Options that take the next word as their value: the global ones, and push's and sync's --policy. */
const _VALUED = ['-C', '--token-file', '--tls-ca', '--tls-fingerprint', '--policy'];
/** Global options that take no value. */
const _FLAGS = ['--json', '--quiet', '-q', '--tls'];

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
