#!/usr/bin/env node
'use strict';
// dist/imz.js under node: runs the bundled CLI (imz.bundle.cjs) through
// V8's code cache (imz.bundle.v8cache), so that a start does not compile
// ~1 MB of JavaScript again: ~20 ms of every `imz status` or `imz push`.
// Written by scripts/build.mjs, which puts the bundle's build id in
// place of __IMZ_BUILD__. CommonJS on purpose: node starts a CommonJS
// entry without building its ES module loader.
//
// The cache is V8's own format, tied to the node that wrote it: a cache
// from another build, another node or another arch, or one that fails its
// checksum (V8 does not check one in release builds), is never handed to
// V8. When there is none to use, the bundle is compiled as usual and the
// cache written at exit, beside the bundle, if that directory can be
// written (whoever can write there can change the bundle itself).
const { closeSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } = require('node:fs');
const { join } = require('node:path');
const { Script } = require('node:vm');

const BUILD = '__IMZ_BUILD__';
const bundle = join(__dirname, 'imz.bundle.cjs');
const cacheFile = join(__dirname, 'imz.bundle.v8cache');
const source = readFileSync(bundle, 'utf8');
// What a cache must have been made for (V8 checks its own version and flags, and the source's length only).
const key = `imz-v8cache 1 ${BUILD} ${source.length} ${process.version} ${process.arch}`;
const cached = _readCache();
// One line, as node wraps a CommonJS module: the bundle's line numbers stay as they are in stack traces.
const script = new Script(`(function (exports, require, module, __filename, __dirname) { ${source}\n})`, { filename: bundle, cachedData: cached });
if (cached === undefined || script.cachedDataRejected) process.once('exit', _writeCache);
script.runInThisContext().call(module.exports, module.exports, require, module, bundle, __dirname);

function _readCache() {
  if (process.env.IMZ_NO_CODE_CACHE) return undefined;
  let bytes;
  try {
    bytes = readFileSync(cacheFile);
  } catch {
    return undefined;
  }
  const nl = bytes.indexOf(10);
  if (nl < 0 || nl > 512) return undefined;
  const [head, sum] = _splitHeader(bytes.toString('latin1', 0, nl));
  const data = bytes.subarray(nl + 1);
  return head === key && sum === _sum(data) ? data : undefined;
}

function _writeCache() {
  if (process.env.IMZ_NO_CODE_CACHE) return;
  const tmp = `${cacheFile}.${process.pid}.tmp`;
  let fd;
  try {
    const data = script.createCachedData();
    fd = openSync(tmp, 'wx', 0o644);
    writeSync(fd, `${key} ${_sum(data)}\n`);
    writeSync(fd, data);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, cacheFile);
  } catch {
    // A directory that cannot be written (an install owned by another user), a full disk: run without.
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch { /* never made */ }
  }
}

function _splitHeader(line) {
  const at = line.lastIndexOf(' ');
  return at < 0 ? ['', ''] : [line.slice(0, at), line.slice(at + 1)];
}

// A checksum of the cache's bytes, so that a torn or damaged file is never handed to V8: CRC-32 where node has
// it (20.15 on, native), else Fletcher's over 32-bit words (~3 ms for the ~300 KB, in a start that has just begun).
function _sum(data) {
  const { crc32 } = require('node:zlib');
  if (typeof crc32 === 'function') return `crc32:${crc32(data).toString(16)}`;
  const words = data.length >>> 2;
  const view = new DataView(data.buffer, data.byteOffset, data.length);
  let a = 1;
  let b = 0;
  for (let i = 0; i < words; i++) {
    a = (a + view.getUint32(i * 4, true)) >>> 0;
    b = (b + a) >>> 0;
  }
  for (let i = words * 4; i < data.length; i++) {
    a = (a + data[i]) >>> 0;
    b = (b + a) >>> 0;
  }
  return `fletcher:${b.toString(16)}.${a.toString(16)}`;
}
