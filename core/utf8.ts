/** The text of UTF-8 bytes (a view of shared memory too: TextDecoder refuses those, so they are copied first). */
export function utf8(bytes: Uint8Array): string {
  return _decoder.decode(bytes.buffer instanceof SharedArrayBuffer ? bytes.slice() : bytes);
}

const _decoder = new TextDecoder();
