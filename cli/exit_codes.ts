/** Exit statuses, as DESIGN.md fixes them. */
export const Exit = { OK: 0, FAILED: 1, USAGE: 2, CONFLICTS: 3, UNREACHABLE: 4 } as const;

/** Maps an error code to the exit status the CLI returns. */
export function exitFor(code: string | undefined): number {
  switch (code) {
    case 'IMZ_USAGE': return Exit.USAGE;
    case 'IMZ_UNREACHABLE':
    case 'IMZ_CLOSED': // the server went away in the middle: the same advice, try again later
    case 'IMZ_BUSY': // too many connections there: try again later
    case 'IMZ_TIMEOUT': // the server or the network stalled: try again later
      return Exit.UNREACHABLE;
    case 'IMZ_CONFLICT': return Exit.CONFLICTS;
    default: return Exit.FAILED;
  }
}
