// A small line diff (LCS over the lines that differ after trimming the
// common head and tail) printed in unified format, for `imz resolve PATH`.
// Meant for text files of up to a few thousand lines; bigger inputs get
// undefined and the caller describes the difference in one line instead.

/** Largest number of lines on either side that unifiedDiff compares. */
export const MAX_DIFF_LINES = 5000;

// Marks a last line that has no newline; text with NUL never reaches here.
const NO_EOL = '\u0000';

interface _Op {
  t: ' ' | '-' | '+';
  line: string;
}

/** Splits text into lines; a last line without '\n' carries the NO_EOL mark. */
function _lines(s: string): string[] {
  const parts = s.split('\n');
  if (parts[parts.length - 1] === '') parts.pop();
  else parts[parts.length - 1] += NO_EOL;
  return parts;
}

/** The edit script from a to b (lines), or undefined when too big to compute here. */
function _script(a: string[], b: string[], maxLines: number): _Op[] | undefined {
  if (a.length > maxLines || b.length > maxLines) return undefined;
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail++;
  const A = a.slice(head, a.length - tail);
  const B = b.slice(head, b.length - tail);
  const n = A.length;
  const m = B.length;
  // L[i*(m+1)+j] = length of the LCS of A[i..] and B[j..] (lengths fit 16 bits: n, m <= maxLines).
  const w = m + 1;
  const L = new Uint16Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      L[i * w + j] = A[i] === B[j] ? L[(i + 1) * w + j + 1]! + 1 : Math.max(L[(i + 1) * w + j]!, L[i * w + j + 1]!);
    }
  }
  const ops: _Op[] = [];
  for (let k = 0; k < head; k++) ops.push({ t: ' ', line: a[k]! });
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && A[i] === B[j]) {
      ops.push({ t: ' ', line: A[i]! });
      i++;
      j++;
    } else if (j >= m || (i < n && L[(i + 1) * w + j]! >= L[i * w + j + 1]!)) {
      ops.push({ t: '-', line: A[i++]! });
    } else {
      ops.push({ t: '+', line: B[j++]! });
    }
  }
  for (let k = a.length - tail; k < a.length; k++) ops.push({ t: ' ', line: a[k]! });
  return ops;
}

function _range(start: number, len: number): string {
  // GNU diff: an empty range names the line before it; a one-line range has no count.
  if (len === 0) return `${start},0`;
  if (len === 1) return `${start + 1}`;
  return `${start + 1},${len}`;
}

/**
 * Unified diff of two texts (a is the "---" side, b the "+++" side), with
 * `context` lines around each change. Returns '' when the texts are equal
 * and undefined when either has more than maxLines lines.
 */
export function unifiedDiff(a: string, b: string, aLabel: string, bLabel: string, opts: { context?: number; maxLines?: number } = {}): string | undefined {
  const context = opts.context ?? 3;
  if (a === b) return '';
  const ops = _script(_lines(a), _lines(b), opts.maxLines ?? MAX_DIFF_LINES);
  if (!ops) return undefined;
  const out = [`--- ${aLabel}`, `+++ ${bLabel}`];
  // Positions (in ops) of changed lines, grouped into hunks whose gaps are at most 2*context.
  const changed: number[] = [];
  for (let k = 0; k < ops.length; k++) if (ops[k]!.t !== ' ') changed.push(k);
  let g = 0;
  while (g < changed.length) {
    let end = g;
    while (end + 1 < changed.length && changed[end + 1]! - changed[end]! <= 2 * context + 1) end++;
    const from = Math.max(0, changed[g]! - context);
    const to = Math.min(ops.length, changed[end]! + context + 1);
    // Line numbers (0-based) of the hunk's first line on each side.
    let aStart = 0;
    let bStart = 0;
    for (let k = 0; k < from; k++) {
      if (ops[k]!.t !== '+') aStart++;
      if (ops[k]!.t !== '-') bStart++;
    }
    let aLen = 0;
    let bLen = 0;
    const body: string[] = [];
    for (let k = from; k < to; k++) {
      const op = ops[k]!;
      if (op.t !== '+') aLen++;
      if (op.t !== '-') bLen++;
      if (op.line.endsWith(NO_EOL)) body.push(op.t + op.line.slice(0, -1), '\\ No newline at end of file');
      else body.push(op.t + op.line);
    }
    out.push(`@@ -${_range(aStart, aLen)} +${_range(bStart, bLen)} @@`, ...body);
    g = end + 1;
  }
  return out.join('\n') + '\n';
}
