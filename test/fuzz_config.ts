// Shared settings of the property-based (fuzz) suites, so `npm test` runs
// them quickly and reproducibly (fixed seed, few runs) and `npm run fuzz`
// runs the very same properties long (IMZ_FUZZ_RUNS) with a fresh seed
// (IMZ_FUZZ_SEED). Each suite counts the inputs it tried and prints one line
// to stderr, which scripts/fuzz.mjs adds up for the report.
import fc from 'fast-check';

/** The default seed: every `npm test` tries the same inputs. */
export const DEFAULT_SEED = 20261125;
/** Runs per property (at scale 1) in `npm test`. */
export const DEFAULT_RUNS = 500;

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`${name}=${v} is not an integer`);
  return n;
}

/** The seed of this run: IMZ_FUZZ_SEED, or the fixed default. */
export const FUZZ_SEED = envInt('IMZ_FUZZ_SEED') ?? DEFAULT_SEED;
/** Runs per property at scale 1: IMZ_FUZZ_RUNS (the long run), or DEFAULT_RUNS. */
export const FUZZ_RUNS = Math.max(1, envInt('IMZ_FUZZ_RUNS') ?? DEFAULT_RUNS);

/** One fuzz suite: runs properties with the shared parameters and counts their inputs. */
export class FuzzSuite {
  readonly name: string;
  inputs = 0;
  private _t0 = 0; // set by the first property: suites are loaded together, then run one after another

  constructor(name: string) {
    this.name = name;
  }

  /** How many runs a property of this relative cost gets (scale < 1 for slow properties). */
  runs(scale = 1): number {
    return Math.max(1, Math.round(FUZZ_RUNS * scale));
  }

  /**
   * Checks a property over `runs(scale)` inputs with the shared seed;
   * throws (with fast-check's counterexample and replay path) when it fails.
   * `predicate` fails by throwing (uvu asserts) or returning false.
   */
  check<T>(arb: fc.Arbitrary<T>, predicate: (value: T) => boolean | void, scale = 1): void {
    this._t0 ||= Date.now();
    const out = fc.check(fc.property(arb, predicate), { seed: FUZZ_SEED, numRuns: this.runs(scale) });
    // Inputs generated (the failing one included), not the shrinking attempts after a failure.
    this.inputs += out.numRuns;
    if (out.failed) throw new Error(fc.defaultReportMessage(out) ?? 'property failed');
  }

  /** Prints the suite's one-line summary to stderr (scripts/fuzz.mjs reads it). */
  report(): void {
    process.stderr.write(`fuzz: ${this.name}: ${this.inputs} inputs, seed ${FUZZ_SEED} (${((Date.now() - (this._t0 || Date.now())) / 1000).toFixed(1)} s)\n`);
  }
}
