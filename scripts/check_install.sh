#!/usr/bin/env bash
# The installed layout, as an operator meets it: install into a scratch prefix, put a
# configuration with relative paths in another folder, and run it from a third folder with an
# environment that knows nothing of the toolchain or the checkout. Run by .ci/run.
#   usage: scripts/check_install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
etc=$work/etc/taskhost
elsewhere=$work/elsewhere
fail() { echo "check_install: $*" >&2; exit 1; }

scripts/install.sh "$prefix"

echo "== the layout" >&2
test -x "$prefix/bin/taskhost" || fail "no bin/taskhost"
for library in libEcho.so libNoop.so libTargetFile.so libCommand.so libHTTPRequest.so libpricing.so BUILD; do
  test -f "$prefix/lib/taskhost/$library" || fail "no lib/taskhost/$library"
done
grep -q '^commit=' "$prefix/lib/taskhost/BUILD" || fail "BUILD has no commit"

echo "== nothing installed needs the toolchain's folder" >&2
toolchain=$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")
for file in "$prefix/bin/taskhost" "$prefix"/lib/taskhost/*.so*; do
  if readelf -d "$file" | grep -E 'RPATH|RUNPATH' | grep -qF "$toolchain"; then
    fail "$file has the toolchain in its run path: $(readelf -d "$file" | grep -E 'RPATH|RUNPATH')"
  fi
  if ldd "$file" | grep -qF "$toolchain"; then fail "$file loads from the toolchain: $(ldd "$file")"; fi
  if ldd "$file" | grep -q "not found"; then fail "$file misses a library: $(ldd "$file")"; fi
done

echo "== the Swift plugins bind no symbol to the host's copies (they run on a runtime of their own)" >&2
nm -D --defined-only "$prefix/bin/taskhost" | awk '{ print $3 }' | sort >"$work/host-symbols"
for plugin in "$prefix"/lib/taskhost/lib{Echo,HTTPRequest}.so; do
  shared=$(nm -D --undefined-only "$plugin" | awk '{ print $2 }' | sort | comm -12 - "$work/host-symbols" | head -5)
  test -z "$shared" || fail "$plugin would bind to the host's $shared"
done

echo "== a configuration in its own folder, run from a third one" >&2
mkdir -p "$etc/in" "$elsewhere"
cat >"$etc/pipeline.yaml" <<'YAML'
executors:
  price:
    library: pricing                 # lib/taskhost/libpricing.so, found beside the plugins
    function: pricing_reprice
    signature: "int32(string, int64)"
    arguments: ["$.data.sku", "$.data.cents"]
  echo: { plugin: Echo }             # a Swift plugin: its runtime is installed beside it
  noop: { plugin: Noop }             # a C plugin
sources:
  orders: { kind: file, path: in/orders.jsonl, executor: price, targetId: "$.data.customer" }
  events: { kind: file, path: in/events.jsonl, executor: echo }
  pings: { kind: file, path: in/pings.jsonl, executor: noop }
results: { path: out/results.jsonl }
deadLetter: { path: out/dead-letter.jsonl }
queue: { path: state/queue.db }
YAML
printf '{"data": {"customer": "c1", "sku": "A-1", "cents": 1000}}\n{"data": {"customer": "c2", "sku": "B-2", "cents": 250}}\n' >"$etc/in/orders.jsonl"
printf '{"targetId": "d1", "data": "hello"}\n{"targetId": "d2", "data": "world"}\n' >"$etc/in/events.jsonl"
printf '{"targetId": 1}\n{"targetId": 2}\n{"targetId": 3}\n' >"$etc/in/pings.jsonl"
# Another process must not find the checkout's plugins or the toolchain: a bare environment, run
# from a folder that has nothing of TaskHost.
run() { (cd "$elsewhere" && env -i PATH=/usr/bin:/bin HOME="$elsewhere" "$prefix/bin/taskhost" "$@"); }
run --version | tee "$work/version.txt"
grep -q "^taskhost [0-9]" "$work/version.txt" || fail "--version has no version"
grep -q "^commit: *[0-9a-f]" "$work/version.txt" || fail "--version has no commit"
grep -q "^plugin ABI: " "$work/version.txt" || fail "--version has no plugin ABI"
run check "$etc/pipeline.yaml"
run run --quiet "$etc/pipeline.yaml"
test "$(wc -l <"$etc/out/results.jsonl")" -eq 7 || fail "expected 7 results: $(cat "$etc/out/results.jsonl")"
test "$(grep -c '"status":"succeeded"' "$etc/out/results.jsonl")" -eq 7 || fail "not all succeeded: $(cat "$etc/out/results.jsonl")"
test -f "$etc/state/queue.db" || fail "the queue is not beside the configuration"
test -z "$(ls -A "$elsewhere")" || fail "the run wrote into the working folder: $(ls -A "$elsewhere")"
run status "$etc/pipeline.yaml" | grep -q "succeeded: *7" || fail "status does not show the 7 tasks"
echo "check_install: ok ($prefix)" >&2
