import { ImzError } from '../protocol/errors.ts';
import { printable } from '../core/paths.ts';
import type { ChalkInstance } from 'chalk';

/** Options every command takes. */
export interface GlobalArgs {
  C?: string;
  json?: boolean;
  quiet?: boolean;
  tokenFile?: string;
  tls?: boolean;
  tlsCa?: string;
  tlsFingerprint?: string;
}

/**
 * All terminal output of the CLI: plain lines on stdout, JSON lines with
 * --json (and nothing else on stdout), progress on stderr only on a TTY,
 * colours only on a TTY. chalk and ora load only when a terminal needs them.
 */
export class Output {
  readonly json: boolean;
  readonly quiet: boolean;
  readonly tty: boolean;
  private _chalk: ChalkInstance | undefined;
  private _spinner: { text: string; stop(): void; start(): unknown } | undefined;
  private _lastSpin = 0;

  constructor(args: GlobalArgs) {
    this.json = args.json === true;
    this.quiet = args.quiet === true;
    this.tty = process.stderr.isTTY === true && !this.json && !this.quiet && !process.env.CI;
  }

  /** Loads terminal helpers (chalk, ora) when stderr is a terminal. */
  async init(): Promise<this> {
    if (this.tty) {
      this._chalk = (await import('chalk')).default;
    }
    return this;
  }

  /** Colours a word when on a terminal. */
  color(kind: 'ok' | 'warn' | 'err' | 'dim' | 'path', s: string): string {
    const c = this._chalk;
    if (!c || !process.stdout.isTTY) return s;
    return kind === 'ok' ? c.green(s) : kind === 'warn' ? c.yellow(s) : kind === 'err' ? c.red(s) : kind === 'dim' ? c.dim(s) : c.cyan(s);
  }

  /** A human line on stdout (suppressed by --quiet and --json). */
  line(s: string): void {
    if (this.json || this.quiet) return;
    this._pauseSpinner();
    process.stdout.write(s + '\n');
  }

  /** A JSON event on stdout (only with --json). */
  event(obj: Record<string, unknown>): void {
    if (!this.json) return;
    process.stdout.write(JSON.stringify(obj) + '\n');
  }

  /** A warning on stderr (kept under --quiet: it is something to act on). */
  warn(s: string): void {
    this._pauseSpinner();
    process.stderr.write(`${this._chalk ? this._chalk.yellow('warning:') : 'warning:'} ${_oneLine(s)}\n`);
  }

  /** An error line on stderr, and as a JSON event with --json. */
  error(code: string, message: string): void {
    this.stopProgress();
    process.stderr.write(`${this._chalk ? this._chalk.red('imz:') : 'imz:'} ${_oneLine(message)}\n`);
    this.event({ event: 'error', code, message });
  }

  /** Updates the progress spinner (terminal only, throttled). */
  async progress(text: string): Promise<void> {
    if (!this.tty) return;
    const now = Date.now();
    if (now - this._lastSpin < 80) return;
    this._lastSpin = now;
    if (!this._spinner) {
      const ora = (await import('ora')).default;
      this._spinner = ora({ text, stream: process.stderr });
      this._spinner.start();
    } else this._spinner.text = text;
  }

  /** Removes the spinner. */
  stopProgress(): void {
    this._spinner?.stop();
    this._spinner = undefined;
  }

  private _pauseSpinner(): void {
    if (this._spinner) {
      this._spinner.stop();
      this._spinner = undefined;
    }
  }
}

/** Parses a size such as 512K, 100M, 2G or 1.5GiB (powers of 1024; a bare number is bytes); IMZ_USAGE when malformed. */
export function parseSize(text: string, option: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw new ImzError('IMZ_USAGE', `cannot parse ${option} ${JSON.stringify(text)}: expected a size such as 500M or 2G`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * mult);
}

/** Human-readable byte count. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

// A warning or an error is one line, whatever the names in it hold (a file name may hold a newline or an escape
// sequence): control characters are shown escaped, as in JSON.
function _oneLine(s: string): string {
  return printable(s.replace(/[\u0000-\u001f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
}

/** The warning for a conflict record that does not read as one (rel: its path under .imz/). */
export function damagedConflictWarning(rel: string): string {
  return `conflict record .imz/${rel} is damaged and was left out: move it away; a push or pull that meets the conflict again records it anew`;
}

/** The line for local changes a push kept back (taking: directories an interrupted pull is still bringing whole). */
export function heldLine(held: number, taking?: string[]): string {
  if (taking && taking.length > 0) return `${held} changes kept here: an interrupted pull is still bringing ${taking.slice(0, 5).join(', ')}${taking.length > 5 ? ', ...' : ''} whole from the server (run \`imz pull\`)`;
  return `${held} changes kept here, under a directory whose conflict waits for you (imz resolve --list)`;
}
