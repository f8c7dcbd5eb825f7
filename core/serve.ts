import { ImzServer, type ServeOptions } from './server.ts';
import type { SkippedPath } from './tree_scan.ts';

/** Callbacks of a running server. */
export interface ServeHooks {
  onSkip?: (s: SkippedPath) => void;
  onWarning?: (e: Error) => void;
}

/** A started server. */
export interface RunningServer {
  root: string;
  host: string;
  port: number;
  serverId: string;
  journalLast: number;
  server: ImzServer;
  close(): Promise<void>;
}

/** Starts an imz server on opts.dir: scan, journal, watch, listen. */
export async function serve(opts: ServeOptions, hooks: ServeHooks = {}): Promise<RunningServer> {
  const server = new ImzServer(opts);
  if (hooks.onSkip) server.on('skipped', hooks.onSkip);
  server.on('warning', (e: Error) => hooks.onWarning?.(e));
  const { host, port } = await server.start();
  return {
    root: server.root, host, port, serverId: server.state.id, journalLast: server.state.lastSeq, server,
    close: () => server.close(),
  };
}
