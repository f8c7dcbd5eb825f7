import { Codes, ImzError } from '../protocol/errors.ts';

/** Conflict resolution policies (DESIGN.md). */
export const POLICIES = ['manual', 'server-wins', 'client-wins', 'newest', 'keep-both'] as const;
export type Policy = (typeof POLICIES)[number];

/** Checks a policy name; IMZ_USAGE otherwise. */
export function checkPolicy(p: string): Policy {
  if (!(POLICIES as readonly string[]).includes(p)) throw new ImzError(Codes.BAD_USAGE, `cannot use conflict policy ${JSON.stringify(p)}: choose one of ${POLICIES.join(', ')}`);
  return p as Policy;
}
