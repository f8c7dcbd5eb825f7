import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { Codes, ImzError, toImzError, UNSAFE_TEXT } from './errors.ts';
import { DEFAULT_MAX_FRAME, FrameDecoder, HEADER_SIZE, encodeFrame } from './frame_codec.ts';
import { type Body, type Envelope, Op, decodeEnvelope, encodeEnvelope } from './messages.ts';

/** Options of a session. */
export interface SessionOptions {
  /** Largest frame accepted before HELLO raises or lowers it. */
  maxFrame?: number;
  /** Bytes of streamed replies buffered before the socket is paused. */
  highWaterMark?: number;
  /** Most requests a peer may have in flight on this session (server side). */
  maxInFlight?: number;
}

/** The answering side of one request: frames sent through it carry the request's xid. */
export interface ReplyChannel {
  readonly xid: number;
  readonly op: number;
  /** Sends one reply frame; resolves when the socket can take more (backpressure). */
  send(body: Body, last?: boolean): Promise<void>;
  /** Ends the reply with an error frame. */
  fail(err: unknown): Promise<void>;
  /** True once the session is closed (a streaming handler should stop). */
  readonly closed: boolean;
}

/** Handles one incoming request; must end the reply (send(..., true) or fail). */
export type RequestHandler = (req: Envelope, reply: ReplyChannel) => Promise<void>;

interface _Pending {
  op: number;
  // single reply
  resolve?: (env: Envelope) => void;
  reject?: (err: ImzError) => void;
  // streamed reply
  queue?: Envelope[];
  queuedBytes?: number;
  done?: boolean;
  error?: ImzError;
  wake?: () => void;
}

/**
 * An RPC session over one socket: request ids (xids), many requests in
 * flight, streamed multi-frame replies, unsolicited server messages
 * ('message' events), and backpressure both ways. It knows messages, not files.
 *
 * Events: 'message' (Envelope with no matching request), 'close' (ImzError | undefined).
 */
export class Session extends EventEmitter {
  readonly socket: Socket;
  private _decoder: FrameDecoder;
  private _nextXid = 1;
  private _pending = new Map<number, _Pending>();
  private _handler: RequestHandler | undefined;
  private _closed = false;
  private _closeError: ImzError | undefined;
  private _streamBytes = 0;
  private _paused = false;
  private _inFlight = 0;
  private _drainWaiters: (() => void)[] = [];
  readonly highWaterMark: number;
  readonly maxInFlight: number;

  constructor(socket: Socket, opts: SessionOptions = {}) {
    super();
    this.socket = socket;
    this._decoder = new FrameDecoder(opts.maxFrame ?? DEFAULT_MAX_FRAME);
    this.highWaterMark = opts.highWaterMark ?? 8 * 1024 * 1024;
    this.maxInFlight = opts.maxInFlight ?? 256;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Uint8Array) => this._onData(chunk));
    socket.on('drain', () => {
      const w = this._drainWaiters;
      this._drainWaiters = [];
      for (const f of w) f();
    });
    socket.on('error', (err) => this.close(new ImzError(Codes.CLOSED, `cannot talk to peer: ${err.message}`)));
    socket.on('close', () => this.close());
  }

  /** The negotiated maximum frame size. */
  get maxFrame(): number {
    return this._decoder.maxFrame;
  }

  set maxFrame(n: number) {
    this._decoder.maxFrame = n;
  }

  /** True once closed. */
  get closed(): boolean {
    return this._closed;
  }

  /** Installs the handler for incoming requests (the server side). */
  handle(handler: RequestHandler): void {
    this._handler = handler;
  }

  /** Sends a request and resolves with its single reply frame. */
  request(op: number, body: Body = {}): Promise<Envelope> {
    if (this._closed) return Promise.reject(this._closedError());
    const xid = this._allocXid();
    return new Promise<Envelope>((resolve, reject) => {
      this._pending.set(xid, { op, resolve, reject });
      // A request that cannot be sent (e.g. over maxFrame) fails instead of waiting forever.
      this._write({ xid, op, ...body }).catch((err) => { if (this._pending.delete(xid)) reject(toImzError(err, 'send request')); });
    });
  }

  /** Sends a request whose reply is several frames; yields them until the last one. */
  async *stream(op: number, body: Body = {}): AsyncGenerator<Envelope> {
    if (this._closed) throw this._closedError();
    const xid = this._allocXid();
    const p: _Pending = { op, queue: [], queuedBytes: 0 };
    this._pending.set(xid, p);
    try {
      await this._write({ xid, op, ...body });
      for (;;) {
        while (p.queue!.length > 0) {
          const env = p.queue!.shift()!;
          const n = (env as { _size?: number })._size ?? 0;
          p.queuedBytes! -= n;
          this._streamBytes -= n;
          this._maybeResume();
          yield env;
        }
        if (p.error) throw p.error;
        if (p.done) return;
        await new Promise<void>((r) => { p.wake = r; });
        p.wake = undefined;
      }
    } finally {
      this._streamBytes -= p.queuedBytes ?? 0;
      this._maybeResume();
      this._pending.delete(xid);
    }
  }

  /** Sends an unsolicited message (xid 0). */
  notify(op: number, body: Body = {}, error?: { code: string; message: string }): Promise<void> {
    return this._write({ xid: 0, op, ...body, ...(error ? { error } : {}) });
  }

  /** Requests sent and not yet fully answered. */
  get pending(): number {
    return this._pending.size;
  }

  /** Closes the session; pending requests fail with err (or IMZ_CLOSED). */
  close(err?: ImzError): void {
    if (this._closed) return;
    this._closed = true;
    this._closeError = err;
    const e = this._closedError();
    for (const p of this._pending.values()) {
      if (p.reject) p.reject(e);
      else { p.error = e; p.wake?.(); }
    }
    this._pending.clear();
    const w = this._drainWaiters;
    this._drainWaiters = [];
    for (const f of w) f();
    this.socket.destroy();
    this.emit('close', err);
  }

  /** Sends an error frame to the peer (if the socket takes it) and closes. */
  abort(err: ImzError): void {
    if (this._closed) return;
    try {
      this.socket.write(encodeFrame(encodeEnvelope({ xid: 0, op: Op.ERROR, last: true, error: { code: err.code, message: err.message } })));
      this.socket.end();
    } catch { /* the socket is already gone */ }
    // Give the error frame a moment to leave before tearing the socket down
    // (not through close(): it returns at once since _closed is set below).
    setTimeout(() => this.socket.destroy(), 50).unref?.();
    this._closed = true;
    this._closeError = err;
    const e = this._closedError();
    for (const p of this._pending.values()) {
      if (p.reject) p.reject(e);
      else { p.error = e; p.wake?.(); }
    }
    this._pending.clear();
    const w = this._drainWaiters;
    this._drainWaiters = [];
    for (const f of w) f();
    this.emit('close', err);
  }

  private _closedError(): ImzError {
    return this._closeError ?? new ImzError(Codes.CLOSED, 'cannot talk to peer: the connection closed');
  }

  private _allocXid(): number {
    const xid = this._nextXid;
    this._nextXid = this._nextXid >= 0xffffffff ? 1 : this._nextXid + 1;
    return xid;
  }

  private async _write(env: Partial<Envelope>): Promise<void> {
    if (this._closed) throw this._closedError();
    const body = encodeEnvelope(env);
    if (body.length > this._decoder.maxFrame) {
      throw new ImzError(Codes.FRAME_TOO_LARGE, `cannot send frame: ${body.length} bytes is over the ${this._decoder.maxFrame}-byte maximum`);
    }
    if (!this._writeFrame(body)) {
      await new Promise<void>((r) => this._drainWaiters.push(r));
      if (this._closed) throw this._closedError();
    }
  }

  // Large bodies go out as header + body in one writev (no copy into a
  // joined buffer); small ones as one buffer, which is cheaper for them.
  // Frames written in one turn of the event loop (the replies to a burst of
  // pipelined requests, a burst of uploads) leave in one writev: a syscall
  // per small frame on loopback costs more than building the frame.
  private _writeFrame(body: Uint8Array): boolean {
    if (!this._corked) {
      this._corked = true;
      this.socket.cork();
      process.nextTick(this._uncork);
    }
    if (body.length < 64 * 1024) return this.socket.write(encodeFrame(body));
    const head = new Uint8Array(HEADER_SIZE);
    new DataView(head.buffer).setUint32(0, body.length, false);
    this.socket.write(head);
    return this.socket.write(body);
  }

  private _corked = false;
  private _uncork = (): void => {
    this._corked = false;
    this.socket.uncork();
  };

  /** When the peer last sent anything (ms since the epoch): idle and dead-peer checks read it. */
  lastReceived = Date.now();

  private _onData(chunk: Uint8Array): void {
    if (this._closed) return;
    this.lastReceived = Date.now();
    let frames: Uint8Array[];
    try {
      frames = this._decoder.push(chunk);
    } catch (err) {
      this.abort(toImzError(err, 'read frame'));
      return;
    }
    for (const f of frames) {
      if (this._closed) return;
      let env: Envelope;
      try {
        env = decodeEnvelope(f);
      } catch (err) {
        this.abort(toImzError(err, 'decode frame'));
        return;
      }
      (env as { _size?: number })._size = f.length;
      this._dispatch(env);
    }
  }

  private _dispatch(env: Envelope): void {
    if (env.reply) {
      const p = this._pending.get(env.xid);
      if (!p) return; // a reply to a request we gave up on: ignore
      const err = env.error && env.error.code ? wireError(env.error) : undefined;
      if (p.resolve) {
        this._pending.delete(env.xid);
        if (err) p.reject!(err);
        else p.resolve(env);
        return;
      }
      if (err) p.error = err;
      else {
        p.queue!.push(env);
        const n = (env as { _size?: number })._size ?? 0;
        p.queuedBytes! += n;
        this._streamBytes += n;
        if (env.last) p.done = true;
        if (this._streamBytes > this.highWaterMark && !this._paused) {
          this._paused = true;
          this.socket.pause();
        }
      }
      if (err || env.last) p.done = true;
      p.wake?.();
      return;
    }
    if (env.xid === 0) {
      if (env.op === Op.ERROR && env.error) {
        this.close(wireError(env.error));
        return;
      }
      // Only a server sends unsolicited messages: to the serving side, xid 0 is a request nobody could answer.
      if (this._handler) {
        this.abort(new ImzError(Codes.PROTOCOL, 'cannot accept request: xid 0 is reserved for unsolicited messages'));
        return;
      }
      this.emit('message', env);
      return;
    }
    this._onRequest(env);
  }

  private _maybeResume(): void {
    if (this._paused && this._streamBytes <= this.highWaterMark / 2) {
      this._paused = false;
      this.socket.resume();
    }
  }

  private _onRequest(req: Envelope): void {
    const handler = this._handler;
    if (!handler) {
      this.abort(new ImzError(Codes.PROTOCOL, 'cannot accept request: this side does not serve requests'));
      return;
    }
    if (this._inFlight >= this.maxInFlight) {
      this.abort(new ImzError(Codes.PROTOCOL, `cannot accept request: more than ${this.maxInFlight} requests in flight`));
      return;
    }
    this._inFlight++;
    let ended = false;
    const channel: ReplyChannel = {
      xid: req.xid,
      op: req.op,
      send: async (body: Body, last = false) => {
        if (ended) throw new ImzError(Codes.INTERNAL, 'cannot send reply: it already ended');
        if (last) ended = true;
        try {
          await this._write({ xid: req.xid, op: req.op, reply: true, last, ...body });
        } catch (err) {
          // The final frame did not go out (e.g. over maxFrame): let fail() still end the reply.
          if (last) ended = false;
          throw err;
        }
      },
      fail: async (err: unknown) => {
        if (ended) return;
        ended = true;
        const e = toImzError(err, 'serve request');
        await this._write({ xid: req.xid, op: req.op, reply: true, last: true, error: { code: e.code, message: e.message } }).catch(() => {});
      },
      get closed() { return ended; },
    };
    const session = this;
    Object.defineProperty(channel, 'closed', { get: () => ended || session._closed });
    handler(req, channel)
      .catch((err) => channel.fail(err))
      .then(() => { if (!ended) return channel.fail(new ImzError(Codes.INTERNAL, 'cannot serve request: the handler sent no final frame')); })
      .catch(() => {})
      .finally(() => { this._inFlight--; });
  }
}

// Codes whose meaning is local (they pick exit statuses such as "bad usage"
// or "conflicts remain"): from a peer they only say it misbehaved.
const _UNSAFE_RUNS = new RegExp(`${UNSAFE_TEXT.source}+`, 'g');
const _LOCAL_CODES = new Set([Codes.BAD_USAGE, Codes.CONFLICT, Codes.LOCKED, Codes.NOT_REPLICA, Codes.NOT_EMPTY]);

/**
 * An error frame's content as an ImzError fit to show: a well-formed code
 * (local-only ones become IMZ_PROTOCOL), and one line of text without
 * control characters, worded "cannot ...".
 */
export function wireError(e: { code?: string; message?: string }): ImzError {
  let code = typeof e.code === 'string' && /^IMZ_[A-Z_]{1,40}$/.test(e.code) ? e.code : Codes.PROTOCOL;
  if (_LOCAL_CODES.has(code as never)) code = Codes.PROTOCOL;
  let message = String(e.message ?? '').replace(_UNSAFE_RUNS, ' ').trim().slice(0, 500);
  if (message === '') message = 'the peer closed the connection';
  if (!message.startsWith('cannot ')) message = `cannot talk to peer: ${message}`;
  return new ImzError(code, message);
}
