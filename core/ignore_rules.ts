import ignore from 'ignore';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { IgnoreFn } from './tree_scan.ts';

/** Name of the per-tree exclusion file (gitignore syntax), read at the tree's root. */
export const IGNORE_FILE = '.imzignore';

/** Loads root/.imzignore; returns undefined when there is none. */
export async function loadIgnore(root: string): Promise<IgnoreFn | undefined> {
  let text: string;
  try {
    text = await readFile(join(root, IGNORE_FILE), 'utf8');
  } catch {
    return undefined;
  }
  return ignoreFromText(text);
}

/** Builds an ignore predicate from gitignore-syntax text. */
export function ignoreFromText(text: string): IgnoreFn {
  const ig = ignore().add(text);
  return (path: string, isDir: boolean) => ig.ignores(isDir ? `${path}/` : path);
}
