import Synchronization
import TaskHostPlugins
import TaskHostScheduler

/// The O(1) invariant bookkeeping of SCENARIOS.md, done inside the timed executor. Executions
/// may run on several threads, so the flags and counters are atomics, packed so that a task
/// costs two read-modify-writes, not five:
/// - per target, one word holds `busy` (bit 0) and `lastIdx + 1` (the other bits): `enter`
///   exchanges it, so an overlap or an out-of-order index is seen in the value it replaces;
/// - `running` is `entered - left`. The scheduler orders a task's `leave` before the start it
///   makes room for (through its lock), so `enter` never reads a stale `left` and never counts a
///   finished task as running.
final class Invariants: @unchecked Sendable {
    let maxThreads: Int
    let targets: UnsafeMutablePointer<Atomic<Int>>
    let targetCount: Int
    let entered = Atomic<Int>(0)
    let left = Atomic<Int>(0)
    let maxRunning = Atomic<Int>(0)
    let violations = Atomic<Int>(0)
    /// Nanoseconds the sleeping executor (S3) actually slept, timer overshoot included.
    let slept = Atomic<Int>(0)
    let firstViolation = Mutex<String?>(nil)

    init(targetCount: Int, maxThreads: Int?) {
        self.targetCount = targetCount
        self.maxThreads = maxThreads ?? Int.max
        targets = .allocate(capacity: targetCount)
        for t in 0..<targetCount { (targets + t).initialize(to: Atomic(0)) }
    }

    deinit {
        targets.deinitialize(count: targetCount)
        targets.deallocate()
    }

    func violate(_ message: @autoclosure () -> String) {
        if violations.add(1, ordering: .relaxed).newValue == 1 {
            let text = message()
            firstViolation.withLock { $0 = text }
        }
    }

    @inline(__always)
    func enter(target t: Int, index i: Int) {
        let previous = targets[t].exchange((i + 1) << 1 | 1, ordering: .acquiring)
        if previous & 1 != 0 { violate("target \(t) ran concurrently (task \(i))") }
        let last = (previous >> 1) - 1
        if i <= last { violate("FIFO broken on target \(t): \(i) after \(last)") }
        let now = entered.add(1, ordering: .relaxed).newValue - left.load(ordering: .relaxed)
        if now > maxRunning.load(ordering: .relaxed) { maxRunning.max(now, ordering: .relaxed) }
        if now > maxThreads { violate("running \(now) > maxThreads \(maxThreads)") }
    }

    @inline(__always)
    func leave(target t: Int, index i: Int) {
        targets[t].store((i + 1) << 1, ordering: .releasing)
        left.add(1, ordering: .releasing)
    }

    func finish(expected: Int) {
        let done = left.load(ordering: .relaxed)
        if done != expected { violate("done \(done) != tasks \(expected)") }
        let running = entered.load(ordering: .relaxed) - done
        if running != 0 { violate("running \(running) after run() returned") }
    }
}

/// The decimal index in a payload, read from its UTF-8 bytes (-1 if it is not one).
@inline(__always)
func decimalIndex(_ payload: String) -> Int {
    payload.utf8.withContiguousStorageIfAvailable { bytes in
        guard !bytes.isEmpty else { return -1 }
        var value = 0
        for byte in bytes {
            guard byte &- 48 < 10 else { return -1 }
            value = value &* 10 &+ Int(byte &- 48)
        }
        return value
    } ?? Int(payload) ?? -1
}

struct ScenarioExecutor: TaskItemExecutor {
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
        invariants.leave(target: Int(t), index: task.payload)
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
            let begin = ContinuousClock.now
            try? await Task.sleep(for: .milliseconds(Int(durations[task.payload])))
            let elapsed = (ContinuousClock.now - begin).components
            invariants.slept.add(
                Int(elapsed.seconds) * 1_000_000_000 + Int(elapsed.attoseconds / 1_000_000_000), ordering: .relaxed)
        case .yield:
            for _ in 0..<yields[task.payload] { await Task.yield() }
        }
        invariants.leave(target: t, index: task.payload)
    }
}
