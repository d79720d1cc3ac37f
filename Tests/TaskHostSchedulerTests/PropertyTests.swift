import Synchronization
import Testing

@testable import TaskHostScheduler

/// Randomized schedules checked against every guarantee of SEMANTICS.md. Each case prints its
/// seed on failure; replay one with `TASKHOST_SEED=<seed> swift test --filter PropertyTests`.
@Suite struct PropertyTests {
    struct Plan: Sendable {
        var seed: UInt64
        var targets: [Int64]
        /// Time units each attempt takes (0: finishes without suspending).
        var durations: [Int]
        /// Attempts of each task that fail (attempt numbers, 1-based).
        var failingAttempts: [Set<Int>]
        var nonRetryable: Set<Int>
        var cap: Int?
        var bufferSize: Int
        var maxAttempts: Int
        var backoff: Duration
        var policy: ExhaustedPolicy
        var synchronous: Bool
        /// Whether hooks observe the run. Without them, attempts on targets without state run
        /// detached (no target state made unless they suspend or fail): both paths are checked.
        var observed = true
        /// Pool caps, and each task's pool.
        var poolLimits: [Int?] = []
        var pools: [Int] = []
    }

    static func plan(seed: UInt64) -> Plan {
        var rng = SplitMix(seed: seed)
        let n = 1 + Int(rng.next() % 150)
        let targetCount = 1 + Int(rng.next() % 12)
        let failureRate = Int(rng.next() % 4)  // 0..3 in 10
        let maxAttempts = 1 + Int(rng.next() % 3)
        var plan = Plan(
            seed: seed, targets: [], durations: [], failingAttempts: [], nonRetryable: [],
            cap: [nil, 1, 2, 3, 8][Int(rng.next() % 5)], bufferSize: [1, 3, 16, 1000][Int(rng.next() % 4)],
            maxAttempts: maxAttempts, backoff: .seconds(Int64(rng.next() % 4)),
            policy: rng.next() % 3 == 0 ? .park : .deadLetter, synchronous: rng.next() % 4 == 0)
        plan.observed = rng.next() % 2 == 0
        if rng.next() % 3 == 0 {
            plan.poolLimits = (0..<Int(1 + rng.next() % 3)).map { _ in
                rng.next() % 4 == 0 ? nil : Int(1 + rng.next() % 3)
            }
        }
        for i in 0..<n {
            plan.pools.append(plan.poolLimits.isEmpty ? 0 : Int(rng.next() % UInt64(plan.poolLimits.count + 1)))
            plan.targets.append(Int64(rng.next() % UInt64(targetCount)))
            plan.durations.append(plan.synchronous ? 0 : Int(rng.next() % 4))
            var failing = Set<Int>()
            for attempt in 1...maxAttempts where Int(rng.next() % 10) < failureRate { failing.insert(attempt) }
            plan.failingAttempts.append(failing)
            if rng.next() % 20 == 0 { plan.nonRetryable.insert(i) }
        }
        return plan
    }

    static var seeds: [UInt64] {
        if let text = Environment.seed, let seed = UInt64(text) { return [seed] }
        return (0..<120).map { 0x5EED_0000 + UInt64($0) }
    }

    @Test("Randomized schedules keep every guarantee", arguments: seeds)
    func randomizedSchedule(seed: UInt64) async {
        let plan = Self.plan(seed: seed)
        let clock = ManualClock()
        let checker = InvariantChecker(plan: plan, clock: clock)
        let executor = PlanExecutor(plan: plan, clock: clock, checker: checker)
        let deadLetters = StateLock<[Int]>([])
        let hooks =
            plan.observed
            ? SchedulerHooks<Int>(attemptFinished: { record in
                if case .deadLettered = record.disposition { deadLetters.withLock { $0.append(record.task.payload) } }
            }) : SchedulerHooks<Int>()
        let scheduler = Scheduler(
            executor: executor,
            configuration: {
                var configuration = SchedulerConfiguration(
                    maxConcurrency: plan.cap, bufferSize: plan.bufferSize,
                    retry: RetryPolicy(maxAttempts: plan.maxAttempts, backoff: .fixed(plan.backoff)),
                    onExhausted: plan.policy)
                configuration.poolLimits = plan.poolLimits
                return configuration
            }(),
            clock: clock, hooks: hooks, random: { 0 })
        let items = plan.targets.enumerated().map {
            TaskItem(targetId: .integer($1), payload: $0, pool: plan.pools[$0])
        }
        let context = "seed \(seed) (replay: TASKHOST_SEED=\(seed) swift test --filter PropertyTests)"

        let final = await withTaskGroup(of: Void.self) { group -> RunSummary<Int>? in
            let run = start(scheduler, ListSource(items), in: &group)
            while !run.isFinished {
                // Quiescent: every running attempt sleeps on the clock, the timer sleeps if any
                // target backs off, the intake is done or held by back-pressure, and no slot is
                // free while a target is ready (work conservation).
                await eventually("quiescence, \(context)") {
                    if run.isFinished { return true }
                    let snapshot = scheduler.snapshot()
                    let sleeping = executor.sleeping
                    return snapshot.running == sleeping
                        && clock.sleeperCount == sleeping + (snapshot.backedOffTargets > 0 ? 1 : 0)
                        && (snapshot.intakeFinished || snapshot.intakeWaitingForRoom)
                        && (snapshot.readyTargets == 0 || snapshot.running == (plan.cap ?? .max))
                }
                if run.isFinished { break }
                guard let next = clock.nextDeadline else {
                    // Nothing will ever wake up again: the run must be ending by itself.
                    await eventually("the run ends with nothing left to wait for, \(context)") { run.isFinished }
                    if !run.isFinished { scheduler.shutdown(gracePeriod: .zero) }
                    break
                }
                clock.advance(to: next)
            }
            await group.waitForAll()
            return run.summary
        }
        // Recording a failure names the seed.
        let violations = checker.violations
        #expect(violations.isEmpty, "\(context): \(violations.prefix(5))")

        // Accounting: every task reached exactly one final state.
        guard let summary = final else {
            Issue.record("the run returned no summary, \(context)")
            return
        }
        let expected = checker.expectedOutcome()
        #expect(summary.succeeded == expected.succeeded, "\(context)")
        if plan.observed {
            #expect(deadLetters.withLock { $0.sorted() } == expected.deadLettered, "\(context)")
        }
        #expect(summary.deadLettered == expected.deadLettered.count, "\(context)")
        #expect(summary.parked == expected.parkedTasks, "\(context)")
        #expect(summary.succeeded + summary.deadLettered + summary.parked == items.count, "\(context)")
        #expect(summary.maxRunning <= plan.cap ?? .max, "\(context)")
    }
}

enum Environment {
    static var seed: String? {
        guard let value = getenv("TASKHOST_SEED") else { return nil }
        return String(cString: value)
    }
}

#if canImport(Glibc)
    import Glibc
#endif

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Runs a plan's tasks: sleeps its duration on the manual clock, fails the planned attempts.
final class PlanExecutor: TaskItemExecutor, Sendable {
    let plan: PropertyTests.Plan
    let clock: ManualClock
    let checker: InvariantChecker
    private let sleepingCount = Atomic<Int>(0)

    init(plan: PropertyTests.Plan, clock: ManualClock, checker: InvariantChecker) {
        self.plan = plan
        self.clock = clock
        self.checker = checker
    }

    var sleeping: Int { sleepingCount.load(ordering: .acquiring) }
    var supportsImmediateExecution: Bool { plan.synchronous }

    func executeImmediately(_ task: TaskItem<Int>, context: ExecutionContext) -> ImmediateOutcome {
        checker.enter(task, context)
        checker.leave(task)
        if let error = outcome(task, context) { return .failed(error) }
        return .succeeded
    }

    func execute(_ task: TaskItem<Int>, context: ExecutionContext) async throws {
        checker.enter(task, context)
        let duration = plan.durations[task.payload]
        if duration > 0 {
            sleepingCount.add(1, ordering: .releasing)
            try? await clock.sleep(for: .seconds(Int64(duration)))
            checker.leave(task)
            sleepingCount.subtract(1, ordering: .releasing)
        } else {
            checker.leave(task)
        }
        if let error = outcome(task, context) { throw error }
    }

    private func outcome(_ task: TaskItem<Int>, _ context: ExecutionContext) -> (any Error)? {
        guard plan.failingAttempts[task.payload].contains(context.attempt) else { return nil }
        checker.failed(task)
        if plan.nonRetryable.contains(task.payload) { return NonRetryableError(TestFailure.failed(task.payload)) }
        return TestFailure.failed(task.payload)
    }
}

/// Checks every guarantee as executions happen, and computes what the plan must end with.
final class InvariantChecker: Sendable {
    struct State {
        var busy: Set<Int64> = []
        var running = 0
        var poolRunning: [Int: Int] = [:]
        /// Per target: the payload of the last attempt started (tasks of a target are admitted
        /// in payload order).
        var lastStarted: [Int64: Int] = [:]
        var attempts: [Int: Int] = [:]
        /// When each task's previous attempt failed, to check the backoff delay.
        var failedAt: [Int: ManualClock.Instant] = [:]
        var violations: [String] = []
    }

    let plan: PropertyTests.Plan
    let clock: ManualClock
    private let state = StateLock(State())

    init(plan: PropertyTests.Plan, clock: ManualClock) {
        self.plan = plan
        self.clock = clock
    }

    var violations: [String] { state.withLock { $0.violations } }

    func enter(_ task: TaskItem<Int>, _ context: ExecutionContext) {
        guard case .integer(let target) = task.targetId else { return }
        let now = clock.now
        state.withLock { s in
            if !s.busy.insert(target).inserted {
                s.violations.append("target \(target) overlapped at task \(task.payload)")
            }
            s.running += 1
            if s.running > plan.cap ?? .max { s.violations.append("running \(s.running) > cap \(plan.cap!)") }
            let pool = plan.pools[task.payload]
            s.poolRunning[pool, default: 0] += 1
            if pool < plan.poolLimits.count, let limit = plan.poolLimits[pool], s.poolRunning[pool]! > limit {
                s.violations.append("pool \(pool) runs \(s.poolRunning[pool]!) > its limit \(limit)")
            }
            if let last = s.lastStarted[target] {
                if task.payload < last { s.violations.append("FIFO: task \(task.payload) after \(last) on \(target)") }
                if task.payload == last, context.attempt == 1 {
                    s.violations.append("task \(task.payload) started twice")
                }
            }
            // Every earlier task of this target must be final before this one starts.
            s.lastStarted[target] = task.payload
            let previous = s.attempts[task.payload, default: 0]
            if context.attempt != previous + 1 {
                s.violations.append("task \(task.payload): attempt \(context.attempt) after \(previous)")
            }
            s.attempts[task.payload] = context.attempt
            if context.attempt > plan.maxAttempts { s.violations.append("task \(task.payload) over maxAttempts") }
            if let failed = s.failedAt[task.payload], failed.duration(to: now) < plan.backoff {
                s.violations.append("task \(task.payload) retried before its backoff")
            }
        }
    }

    func leave(_ task: TaskItem<Int>) {
        guard case .integer(let target) = task.targetId else { return }
        state.withLock { s in
            s.busy.remove(target)
            s.running -= 1
            s.poolRunning[plan.pools[task.payload], default: 0] -= 1
        }
    }

    /// An attempt of `task` fails now: its retry must wait out the backoff from here.
    func failed(_ task: TaskItem<Int>) {
        let now = clock.now
        state.withLock { s in s.failedAt[task.payload] = now }
    }

    struct Expected {
        var succeeded = 0
        var deadLettered: [Int] = []
        var parkedTasks = 0
    }

    /// Replays the plan per target (targets are independent): what must have happened.
    func expectedOutcome() -> Expected {
        var expected = Expected()
        var parked = Set<Int64>()
        for (i, target) in plan.targets.enumerated() {
            if parked.contains(target) {
                expected.parkedTasks += 1
                continue
            }
            var attempt = 1
            while true {
                if !plan.failingAttempts[i].contains(attempt) {
                    expected.succeeded += 1
                    break
                }
                if plan.nonRetryable.contains(i) || attempt == plan.maxAttempts {
                    if plan.policy == .park {
                        parked.insert(target)
                        expected.parkedTasks += 1
                    } else {
                        expected.deadLettered.append(i)
                    }
                    break
                }
                attempt += 1
            }
        }
        return expected
    }

}
