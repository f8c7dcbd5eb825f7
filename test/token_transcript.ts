// What the auth and TLS suites share: every imz run's output is recorded,
// with the tokens of the running test, so that a test can fail when a token
// shows up anywhere a person or a log could see it.
import * as assert from 'uvu/assert';
import { type ImzOptions, type RunResult, type ServerHandle, imz } from './helpers.ts';

/** The output of a test's imz runs, and the tokens that must never appear in it. */
export class TokenTranscript {
  readonly transcripts: string[] = [];
  readonly secrets = new Set<string>();

  /** Forgets the previous test's runs and tokens (call in before.each). */
  reset(): void {
    this.transcripts.length = 0;
    this.secrets.clear();
  }

  /** Runs `imz <args>` (IMZ_TOKEN cleared unless opts.env sets it), recording its output. */
  async cli(args: string[], opts: ImzOptions = {}): Promise<RunResult> {
    const r = await imz(args, { timeoutMs: 15_000, ...opts, env: { IMZ_TOKEN: '', ...opts.env } });
    this.transcripts.push(`imz ${args.join(' ')}\n${r.stdout}\n${r.stderr}`);
    return r;
  }

  /** Fails when a token of this test appears in any client or server output. */
  assertNoLeak(...servers: ServerHandle[]): void {
    const all = [...this.transcripts, ...servers.map((s) => `${s.output().stdout}\n${s.output().stderr}`)];
    for (const t of this.secrets) {
      for (const text of all) assert.not.ok(text.includes(t), `a token appears in process output:\n${text}`);
    }
  }
}
