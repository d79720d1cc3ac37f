#!/usr/bin/env bash
# Builds TaskHost for release and installs it under PREFIX:
#   PREFIX/bin/taskhost           the host, its Swift runtime linked in (--static-swift-stdlib)
#   PREFIX/lib/taskhost/          the example plugins (libEcho.so, libNoop.so, libTargetFile.so,
#                                 libCommand.so, libHTTPRequest.so), libpricing.so (the library the
#                                 quickstart's function executor names), the Swift runtime libraries
#                                 the Swift plugins need, and BUILD (version and commit, which
#                                 `taskhost --version` and taskhost_build_info show)
# The host finds the plugins there by itself (its search path ends with the binary's
# ../lib/taskhost), and nothing installed refers to the toolchain's folder: the Swift plugins find
# their runtime beside them ($ORIGIN). Run again to upgrade (docs/operations.md#install-and-upgrade).
#   usage: scripts/install.sh PREFIX        (DESTDIR=/tmp/pkg scripts/install.sh /usr/local to stage)
set -euo pipefail
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: scripts/install.sh PREFIX (like /usr/local or /opt/taskhost)" >&2
  exit 64
fi
case "$1" in
  /*) prefix=$1 ;;
  *) prefix=$PWD/$1 ;;
esac
cd "$(dirname "$0")/.."
destdir=${DESTDIR:-}
plugins=(Echo Noop TargetFile Command HTTPRequest pricing)

# The host with the Swift runtime linked in; the plugins with the shared one (--static-swift-stdlib
# would link a whole runtime, Foundation and libcurl into each Swift plugin, and fails on
# FoundationNetworking without a static libcurl). A Swift plugin then runs on its own runtime
# beside the host's: they share only the plugin ABI, which is C.
echo "== building (release)" >&2
swift build -c release --static-swift-stdlib --product taskhost >&2
for product in "${plugins[@]}"; do
  swift build -c release --product "$product" >&2
done
bin=$(swift build -c release --show-bin-path)

bindir=$destdir$prefix/bin
libdir=$destdir$prefix/lib/taskhost
# Not writable by group or others: the host refuses plugins that others could replace.
install -d -m 0755 "$bindir" "$libdir"
# Each file is copied aside and renamed into place: a running host keeps its open copy.
put() {  # put SOURCE TARGET MODE
  install -m "$3" "$1" "$2.new"
  mv -f "$2.new" "$2"
}
put "$bin/taskhost" "$bindir/taskhost" 0755
# Debug information out (127 MB to 96 MB); the symbols stay, for crash backtraces.
if command -v strip >/dev/null; then strip --strip-debug "$bindir/taskhost"; fi
for product in "${plugins[@]}"; do
  put "$bin/lib$product.so" "$libdir/lib$product.so" 0755
done

# The Swift plugins link the Swift runtime dynamically: copy the toolchain's libraries they use
# beside them, and have every installed library look for its dependencies only there ($ORIGIN).
toolchain=$(dirname "$(ldd "$bin/libEcho.so" | awk '/libswiftCore\.so/ { print $3 }')")
for library in "$libdir"/lib*.so; do
  ldd "$library" | awk -v dir="$toolchain/" 'index($3, dir) == 1 { print $3 }'
done | sort -u | while read -r runtime; do
  put "$runtime" "$libdir/$(basename "$runtime")" 0644
done
python3 - "$toolchain" "$libdir"/*.so <<'PY'
# RUNPATH rewritten in place, as chrpath does (a shorter string, the rest zeroed): the toolchain's
# folder is dropped, $ORIGIN stays.
import sys
toolchain, files = sys.argv[1].encode(), sys.argv[2:]
for path in files:
    data = bytearray(open(path, "rb").read())
    for old in (toolchain + b":$ORIGIN\0", b"$ORIGIN:" + toolchain + b"\0", toolchain + b"\0"):
        at = data.find(old)
        if at >= 0:
            new = b"$ORIGIN\0"
            data[at:at + len(old)] = new + b"\0" * (len(old) - len(new))
            open(path, "wb").write(data)
            break
PY

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit=$commit-dirty
fi
version=$(sed -n 's/.*static let version = "\(.*\)".*/\1/p' Sources/TaskHostRuntime/Pipeline/BuildInfo.swift)
printf 'version=%s\ncommit=%s\n' "$version" "$commit" >"$libdir/BUILD.new"
chmod 0644 "$libdir/BUILD.new"
mv -f "$libdir/BUILD.new" "$libdir/BUILD"

echo "installed taskhost $version ($commit) in $prefix: bin/taskhost, lib/taskhost/" >&2
