// Stands in for the `long` package in the node bundle (scripts/build.mjs):
// imz's messages have no 64-bit integer fields, and long's start-up
// compiles a WebAssembly module (~4 ms of every command that speaks the
// protocol). protobufjs, finding no Long, reads such fields as numbers.
module.exports = null;
