#!/usr/bin/env bash
# Checks that another package can depend on TaskHost by version and use the scheduler library.
#
# Copies the working tree (uncommitted changes included, ignored files left out) into a throwaway
# git repository tagged 1.0.0, then builds and runs a throwaway consumer package that depends on
# it with `.package(url: "file://…", from: "1.0.0")` and calls `run(executor:tasks:maxConcurrency:)`.
# SwiftPM refuses a product of a versioned dependency whose targets carry `unsafeFlags`, so this
# fails as soon as one creeps back onto the scheduler.
#   usage: scripts/check_dependency.sh        (KEEP=1 keeps the temporary folder and prints it)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/taskhost-dependency.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "== keeping $work" >&2
else
    trap 'rm -rf "$work"' EXIT
fi

echo "== a versioned copy of $root" >&2
repo="$work/taskhost"
mkdir -p "$repo"
# Tracked and untracked files, not the ignored ones; files deleted in the working tree are skipped.
(cd "$root" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$root" && while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done) |
    tar -C "$root" --null -T - -cf - | tar -C "$repo" -xf -
git -C "$repo" init -q
git -C "$repo" add -A
git -C "$repo" -c user.name=check -c user.email=check@localhost commit -q -m "snapshot of the working tree"
git -C "$repo" tag 1.0.0

echo "== a consumer that depends on it from 1.0.0" >&2
consumer="$work/consumer"
mkdir -p "$consumer/Sources/Consumer"
cat >"$consumer/Package.swift" <<EOF
// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Consumer",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "file://$repo", from: "1.0.0")
    ],
    targets: [
        .executableTarget(
            name: "Consumer",
            dependencies: [.product(name: "TaskHostScheduler", package: "taskhost")]
        )
    ]
)
EOF
cat >"$consumer/Sources/Consumer/main.swift" <<'EOF'
import Synchronization
import TaskHostScheduler

/// The tasks of an array, one at a time.
struct Tasks: AsyncSequence, Sendable {
    let items: [TaskItem<Int>]
    struct AsyncIterator: AsyncIteratorProtocol {
        var base: IndexingIterator<[TaskItem<Int>]>
        mutating func next() async -> TaskItem<Int>? { base.next() }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: items.makeIterator()) }
}

let count = 1_000
let items = (0..<count).map { TaskItem(targetId: .integer(Int64($0 % 10)), payload: $0) }
// Per target: whether a task is running and the last payload started (per-target FIFO).
let seen = Mutex<(busy: Set<TargetID>, last: [TargetID: Int], violations: Int)>(([], [:], 0))
let executor = ClosureExecutor<Int> { task, _ in
    seen.withLock { state in
        if state.busy.contains(task.targetId) || task.payload <= state.last[task.targetId, default: -1] {
            state.violations += 1
        }
        state.busy.insert(task.targetId)
        state.last[task.targetId] = task.payload
    }
    await Task.yield()
    seen.withLock { _ = $0.busy.remove(task.targetId) }
}
let summary = await run(executor: executor, tasks: Tasks(items: items), maxConcurrency: 4)
let violations = seen.withLock { $0.violations }
print("consumer: \(summary.succeeded) of \(count) tasks succeeded, \(violations) violations, max running \(summary.maxRunning)")
if summary.succeeded != count || violations != 0 || summary.maxRunning > 4 {
    fatalError("the scheduler did not keep its contract")
}
EOF

echo "== swift build (consumer)" >&2
if ! swift build --package-path "$consumer"; then
    echo "check_dependency: the consumer package does not build against TaskHost 1.0.0" >&2
    exit 1
fi
echo "== run (consumer)" >&2
"$consumer/.build/debug/Consumer"
echo "check_dependency: ok: a package depending on TaskHost by version uses TaskHostScheduler" >&2
