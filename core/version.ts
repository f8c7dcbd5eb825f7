/** imz's version, reported by `imz --version` and in HELLO. */
export const VERSION = '0.1.0';
