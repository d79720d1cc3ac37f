import Synchronization
import TaskHostScheduler

/// The O(1) invariant bookkeeping of SCENARIOS.md, done inside the timed executor. Executions
/// may run on several threads, so the flags and counters are atomics.
final class Invariants: @unchecked Sendable {
    let maxThreads: Int
    let busy: UnsafeMutablePointer<Atomic<UInt8>>
    let lastIndex: UnsafeMutablePointer<Atomic<Int>>
    let targetCount: Int
    let running = Atomic<Int>(0)
    let maxRunning = Atomic<Int>(0)
    let done = Atomic<Int>(0)
    let violations = Atomic<Int>(0)
    let firstViolation = Mutex<String?>(nil)

    init(targetCount: Int, maxThreads: Int?) {
        self.targetCount = targetCount
        self.maxThreads = maxThreads ?? Int.max
        busy = .allocate(capacity: targetCount)
        lastIndex = .allocate(capacity: targetCount)
        for t in 0..<targetCount {
            (busy + t).initialize(to: Atomic(0))
            (lastIndex + t).initialize(to: Atomic(-1))
        }
    }

    deinit {
        busy.deinitialize(count: targetCount)
        lastIndex.deinitialize(count: targetCount)
        busy.deallocate()
        lastIndex.deallocate()
    }

    func violate(_ message: @autoclosure () -> String) {
        if violations.add(1, ordering: .relaxed).newValue == 1 {
            let text = message()
            firstViolation.withLock { $0 = text }
        }
    }

    @inline(__always)
    func enter(target t: Int, index i: Int) {
        if busy[t].exchange(1, ordering: .acquiring) != 0 { violate("target \(t) ran concurrently (task \(i))") }
        let now = running.add(1, ordering: .relaxed).newValue
        if now > maxRunning.load(ordering: .relaxed) { maxRunning.max(now, ordering: .relaxed) }
        if now > maxThreads { violate("running \(now) > maxThreads \(maxThreads)") }
        let last = lastIndex[t].exchange(i, ordering: .relaxed)
        if i <= last { violate("FIFO broken on target \(t): \(i) after \(last)") }
    }

    @inline(__always)
    func leave(target t: Int) {
        busy[t].store(0, ordering: .releasing)
        running.subtract(1, ordering: .relaxed)
        done.add(1, ordering: .relaxed)
    }

    func finish(expected: Int) {
        let done = done.load(ordering: .relaxed)
        if done != expected { violate("done \(done) != tasks \(expected)") }
        let running = running.load(ordering: .relaxed)
        if running != 0 { violate("running \(running) after run() returned") }
    }
}

/// The scenario executors: noop, sleep and yield, each doing the bookkeeping above.
struct ScenarioExecutor: TaskExecutor {
    let invariants: Invariants
    let kind: ExecutorKind
    let durations: [Int32]
    let yields: [Int32]
    /// Whether the no-op executor also offers the synchronous fast path.
    let synchronous: Bool

    var supportsImmediateExecution: Bool { synchronous }

    func executeImmediately(_ task: TaskItem<Int>, context: ExecutionContext) -> ImmediateOutcome {
        guard kind == .noop, case .integer(let t) = task.targetId else { return .deferred }
        invariants.enter(target: Int(t), index: task.payload)
        invariants.leave(target: Int(t))
        return .succeeded
    }

    func execute(_ task: TaskItem<Int>, context: ExecutionContext) async throws {
        guard case .integer(let t64) = task.targetId else { return }
        let t = Int(t64)
        invariants.enter(target: t, index: task.payload)
        switch kind {
        case .noop:
            break
        case .sleep:
            try? await Task.sleep(for: .milliseconds(Int(durations[task.payload])))
        case .yield:
            for _ in 0..<yields[task.payload] { await Task.yield() }
        }
        invariants.leave(target: t)
    }
}
