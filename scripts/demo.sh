#!/usr/bin/env bash
# The quick-start demo: serve a copy of fixtures/sample, clone it, change the
# server's tree directly, pull the change, show that both trees match.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
node scripts/build.mjs
IMZ="node $PWD/dist/imz.js"
work=$(mktemp -d /tmp/imz-demo.XXXXXX)
server_pid=''
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cp -a fixtures/sample "$work/server-tree"
mkdir -p "$work/server-tree/empty"
echo "== imz serve $work/server-tree --port 0"
$IMZ serve "$work/server-tree" --port 0 > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do grep -q 'imz serving' "$work/serve.log" 2>/dev/null && break; sleep 0.05; done
head -1 "$work/serve.log"
addr=$(sed -n 's/.* on \([0-9.]*:[0-9]*\) .*/\1/p' "$work/serve.log" | head -1)
echo "== imz clone $addr replica"
$IMZ clone "$addr" "$work/replica"
echo "== edit on the server: append to docs/kml.txt, add news.txt, remove src/main.js"
echo "Each record has a sequence number." >> "$work/server-tree/docs/kml.txt"
echo "fresh from the server" > "$work/server-tree/news.txt"
rm "$work/server-tree/src/main.js"
sleep 0.5
echo "== imz pull -v"
$IMZ pull -C "$work/replica" -v
echo "== diff -r server-tree replica"
diff -r --no-dereference -x .imz -x .imz-server "$work/server-tree" "$work/replica" && echo "identical"
