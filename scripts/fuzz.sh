#!/usr/bin/env bash
# Fuzzes what reads untrusted bytes with libFuzzer: the JSON line decoder, the HTTP body
# splitter, the configuration reader and the cron parser (targets in Fuzz/<target>/main.swift).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 60 seconds each, every target
#
# Each target is built with `swiftc -sanitize=fuzzer,address` into .build-fuzz/ (the code under
# test is compiled from Sources/ with coverage; the modules it imports are linked from the debug
# build), then run for SECONDS on a copy of its seed corpus Fuzz/corpus/<target>/ (new inputs go
# to .build-fuzz/corpus/<target>/, the seeds stay as committed). A crash stops the run with exit 1
# and leaves the input in .build-fuzz/crash-<target>-*: turn it into a test, fix, and add the
# input to the seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(json-line http-body config cron)

out=.build-fuzz
mkdir -p "$out"
flags=(-sanitize=fuzzer,address -parse-as-library -g -Onone -swift-version 6)

# The config and cron targets import TaskHostConfig, compiled here with coverage; what it imports
# comes from the debug build (its modules and objects).
debug_objects=()
config_built=false
build_config_module() {
  $config_built && return
  swift build --target TaskHostConfig 2>&1 | grep -E "error" >&2 || true
  local bin
  bin="$(swift build --show-bin-path)"
  # The debug build's modules belong to the package named after the checkout's folder: the
  # code compiled here must say the same package to use their `package` declarations.
  local package
  package="$(grep -o '"-package-name","[a-z0-9_]*"' .build/debug.yaml | grep -v '"swift_\|"hummingbird\|"async_\|"yams' | head -1 | cut -d'"' -f4)"
  clang_maps=(
    -Xcc "-fmodule-map-file=$bin/CTaskHostSystem.build/module.modulemap" -Xcc -I -Xcc Sources/CTaskHostSystem/include
    -Xcc -fmodule-map-file=Sources/CSQLite/module.modulemap
    -Xcc -fmodule-map-file=.build/checkouts/Yams/Sources/CYaml/include/module.modulemap
    -Xcc -I -Xcc .build/checkouts/Yams/Sources/CYaml/include
  )
  module_flags=(-I "$bin/Modules" -I "$out/modules" -package-name "$package" "${clang_maps[@]}")
  mkdir -p "$out/modules"
  swiftc "${flags[@]}" "${module_flags[@]}" -module-name TaskHostConfig -wmo -emit-module \
    -emit-module-path "$out/modules/TaskHostConfig.swiftmodule" -c Sources/TaskHostConfig/*.swift \
    -o "$out/TaskHostConfig.o"
  for module in TaskHostJSON TaskHostScheduler TaskHostStore Yams CYaml CTaskHostSystem DequeModule HeapModule \
    InternalCollectionsUtilities ContainersPreview; do
    # A Swift module's objects as its output file map lists them (the current sources; a folder
    # reused across commits keeps objects of deleted files); a C module's by name.
    local map="$bin/$module.build/output-file-map.json"
    if [ -f "$map" ]; then
      while IFS= read -r object; do debug_objects+=("$object"); done < <(python3 -c '
import json, sys
for entry in json.load(open(sys.argv[1])).values():
    if "object" in entry: print(entry["object"])' "$map")
    else
      while IFS= read -r object; do debug_objects+=("$object"); done < <(find "$bin/$module.build" -name '*.o')
    fi
  done
  config_built=true
}

build() {
  local target="$1"
  case "$target" in
    json-line)
      swiftc "${flags[@]}" -package-name taskhost_fuzz -module-name FuzzJSONLine Fuzz/json-line/main.swift Sources/TaskHostJSON/*.swift \
        Sources/TaskHostSources/SourceLine.swift -o "$out/$target" ;;
    http-body)
      swiftc "${flags[@]}" -package-name taskhost_fuzz -module-name FuzzHTTPBody Fuzz/http-body/main.swift \
        Sources/TaskHostSources/SourceLine.swift -o "$out/$target" ;;
    config | cron)
      build_config_module
      swiftc "${flags[@]}" "${module_flags[@]}" -module-name "Fuzz${target^}" "Fuzz/$target/main.swift" \
        "$out/TaskHostConfig.o" "${debug_objects[@]}" -lsqlite3 -o "$out/$target" ;;
    *) echo "unknown target $target (one of: json-line http-body config cron)" >&2; exit 2 ;;
  esac
}

for target in "${targets[@]}"; do
  echo "== fuzz $target: building"
  build "$target" 2> >(grep -v "Cannot export local symbol" >&2)
  mkdir -p "$out/corpus/$target"
  echo "== fuzz $target: $seconds s"
  # Standard input from /dev/null: libFuzzer run as a background job would otherwise stop on it.
  if ! "$out/$target" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$out/crash-$target-" -print_final_stats=1 \
    "$out/corpus/$target" "Fuzz/corpus/$target" </dev/null >"$out/$target.log" 2>&1; then
    tail -n 40 "$out/$target.log" >&2
    echo "fuzz $target: crashed; the input is in $out/crash-$target-*" >&2
    exit 1
  fi
  grep -E "stat::number_of_executed_units|cov:" "$out/$target.log" | tail -n 2
done
echo "== fuzz: no crash"
