import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { IgnoreFn } from './tree_scan.ts';

/** Name of the per-tree exclusion file (gitignore syntax), read at the tree's root. */
export const IGNORE_FILE = '.imzignore';

/** Loads root/.imzignore; returns undefined when there is none. */
export async function loadIgnore(root: string): Promise<IgnoreFn | undefined> {
  return (await loadIgnoreKeyed(root)).ignore;
}

/** root/.imzignore's predicate (undefined without one) and a key that changes whenever its text does ('' without one). */
export async function loadIgnoreKeyed(root: string): Promise<{ ignore?: IgnoreFn; key: string }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(join(root, IGNORE_FILE));
  } catch {
    return { key: '' };
  }
  // Keyed by its bytes, as the index hashes content: a file that is not UTF-8 still matches its index entry.
  return { ignore: await ignoreFromText(bytes.toString('utf8')), key: createHash('sha256').update(bytes).digest('hex') };
}

/** Builds an ignore predicate from gitignore-syntax text. */
export async function ignoreFromText(text: string): Promise<IgnoreFn> {
  // Loaded only for a tree that has rules: most have none, and every status would pay for its code.
  const { default: ignore } = await import('ignore');
  const ig = ignore().add(text);
  return (path: string, isDir: boolean) => ig.ignores(isDir ? `${path}/` : path);
}
