import Synchronization
import Testing

@testable import TaskHostScheduler

#if canImport(Glibc)
    import Glibc
#endif

/// One test per guarantee and edge case of SEMANTICS.md. Time is a ManualClock; executions
/// wait on gates the test opens; no test sleeps on the wall clock.
@Suite struct ContractTests {
    typealias S = Scheduler<GatedExecutor, ManualClock>

    func scheduler(
        _ executor: GatedExecutor, clock: ManualClock = ManualClock(),
        _ configure: (inout SchedulerConfiguration) -> Void = { _ in },
        hooks: SchedulerHooks<Int> = SchedulerHooks()
    ) -> S {
        var configuration = SchedulerConfiguration()
        configure(&configuration)
        return Scheduler(executor: executor, configuration: configuration, clock: clock, hooks: hooks, random: { 0.5 })
    }

    @Test("An attempt fails after an operator parked its target: it stays parked, the retry waits for the release")
    func failureOnOperatorParkedTarget() async {
        let executor = GatedExecutor()
        let clock = ManualClock()
        let s = scheduler(executor, clock: clock) {
            $0.retry = RetryPolicy(maxAttempts: 3, backoff: .fixed(.seconds(1)))
            $0.bufferSize = 2
        }
        await withTaskGroup(of: Void.self) { group in
            // The input stays open: a run whose every task is parked or done would end.
            let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
            for item in tasks(["P", "Q", "P", "P"]) { input.yield(item) }
            let run = start(s, source, in: &group)
            await eventually { executor.isWaiting(0) && executor.isWaiting(1) }
            #expect(s.park("P") == .done)
            executor.open(0, succeed: false)
            executor.open(1)
            await eventually("task 0 failed, task 1 done") { s.snapshot().running == 0 }
            let parked = s.snapshot()
            #expect(parked.parkedTargets == 1, "the failure undid the operator's park")
            #expect(parked.backedOffTargets == 0)
            #expect(parked.queued == 3)
            #expect(executor.started == [0, 1])
            // The release gives the head a fresh set of attempts; then its followers run.
            #expect(s.release("P") == .done)
            for payload in [0, 2, 3] {
                await eventually { executor.isWaiting(payload) }
                executor.open(payload)
            }
            input.finish()
            await eventually { run.isFinished }
            if !run.isFinished { s.shutdown(gracePeriod: .zero) }  // fail, do not hang
            #expect(run.summary?.succeeded == 4)
            #expect(run.summary?.failed == 0)
            #expect(run.summary?.retries == 1)
        }
        #expect(executor.violations.isEmpty)
        #expect(executor.events.filter { $0.kind == .start && $0.payload == 0 }.map(\.attempt) == [1, 1])
    }

    @Test("Releasing an operator's park does not change the failure count")
    func releaseKeepsFailureCount() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) { $0.maxConcurrency = 2 }
        await withTaskGroup(of: Void.self) { group in
            let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
            for item in tasks(["F", "P", "P"]) { input.yield(item) }
            let run = start(s, source, in: &group)
            await eventually { executor.isWaiting(0) && executor.isWaiting(1) }
            executor.open(0, succeed: false)  // dead-lettered: one failure
            #expect(s.park("P") == .done)
            executor.open(1)
            await eventually { s.snapshot().running == 0 && s.snapshot().parkedTargets == 1 }
            #expect(s.release("P") == .done)
            await eventually { executor.isWaiting(2) }
            executor.open(2)
            input.finish()
            await eventually { run.isFinished }
            if !run.isFinished { s.shutdown(gracePeriod: .zero) }  // fail, do not hang
            #expect(run.summary?.failed == 1)
            #expect(run.summary?.deadLettered == 1)
            #expect(run.summary?.succeeded == 2)
        }
    }

    @Test("The original basic example: targets 1, 2, 1 with cap 3")
    func basicExample() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) { $0.maxConcurrency = 3 }
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks([1, 2, 1])), in: &group)
            await eventually("tasks 0 and 1 running") { executor.isWaiting(0) && executor.isWaiting(1) }
            #expect(executor.started == [0, 1])  // the second task of target 1 waits
            executor.open(0)
            await eventually("task 2 running") { executor.isWaiting(2) }
            #expect(executor.started == [0, 1, 2])
            executor.open(1)
            executor.open(2)
            await eventually { run.isFinished }
            #expect(run.summary?.succeeded == 3)
        }
        #expect(executor.violations.isEmpty)
    }

    @Test("Global cap: never more than maxConcurrency running", arguments: [1, 2, 5])
    func globalCap(cap: Int) async {
        let executor = GatedExecutor()
        let s = scheduler(executor) { $0.maxConcurrency = cap }
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks((0..<12).map { TargetID.integer(Int64($0)) })), in: &group)
            for next in 0..<12 {
                let expected = min(cap, 12 - next)
                await eventually("\(expected) running") {
                    executor.waitingCount == expected && s.snapshot().running == expected
                }
                #expect(executor.running <= cap)
                let waiting = (0..<12).first { executor.isWaiting($0) }!
                executor.open(waiting)
            }
            await eventually { run.isFinished }
            #expect(run.summary?.maxRunning == cap)
        }
    }

    @Test("Unbounded: every distinct target runs at once")
    func unbounded() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) { $0.maxConcurrency = nil }
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks((0..<200).map { TargetID.string("t\($0)") })), in: &group)
            await eventually("200 running") { executor.waitingCount == 200 }
            for i in 0..<200 { executor.open(i) }
            await eventually { run.isFinished }
            #expect(run.summary?.succeeded == 200)
        }
    }

    @Test("A hot target with 100,000 queued tasks does not delay a cold target's task")
    func coldTargetBehindHotBacklog() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) {
            $0.maxConcurrency = 4
            $0.bufferSize = 200_000
        }
        var items = (0..<100_000).map { TaskItem(targetId: TargetID.string("hot"), payload: $0) }
        items.append(TaskItem(targetId: "cold", payload: 100_000))
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(items), in: &group)
            await eventually("cold task started") { executor.isWaiting(100_000) }
            #expect(executor.started == [0, 100_000])  // only the hot head ran before it
            #expect(s.snapshot().queued == 99_999)
            s.shutdown(gracePeriod: .zero)
            executor.open(0)
            executor.open(100_000)
            await eventually { run.isFinished }
            // The two running tasks saw the cancellation; the 99,999 queued never started.
            #expect(run.summary?.cancelled == 100_001)
            #expect(run.summary?.unfinished.filter { $0.attempts == 0 }.count == 99_999)
        }
    }

    @Test("Round-robin: ready targets are served in the order they became ready")
    func roundRobin() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) { $0.maxConcurrency = 1 }
        // Task 0 (target X) holds the only slot while A, B, C queue up.
        let targets: [TargetID] = ["X", "A", "A", "A", "B", "B", "C", "C", "C"]
        let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, source, in: &group)
            let items = tasks(targets)
            input.yield(items[0])
            await eventually { executor.isWaiting(0) }
            for item in items.dropFirst() { input.yield(item) }
            input.finish()
            await eventually { s.snapshot().queued == 8 }
            for payload in [0, 1, 4, 6, 2, 5, 7, 3, 8] {
                await eventually("task \(payload) running") { executor.isWaiting(payload) }
                executor.open(payload)
            }
            await eventually { run.isFinished }
        }
        #expect(executor.started == [0, 1, 4, 6, 2, 5, 7, 3, 8])
    }

    @Test("Priority orders target heads, never the tasks of one target")
    func priorityOrdersHeads() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) { $0.maxConcurrency = 1 }
        let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
        let items = [
            TaskItem(targetId: "low", payload: 1, priority: 0),
            TaskItem(targetId: "high", payload: 2, priority: 0),  // the head is not urgent...
            TaskItem(targetId: "high", payload: 3, priority: 9),  // ...its follower is, but cannot overtake it
            TaskItem(targetId: "urgent", payload: 4, priority: 5),
        ]
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, source, in: &group)
            input.yield(TaskItem(targetId: "X", payload: 0))
            await eventually { executor.isWaiting(0) }
            for item in items { input.yield(item) }
            input.finish()
            await eventually { s.snapshot().queued == 4 }
            for payload in [0, 4, 1, 2, 3] {
                await eventually("task \(payload) running") { executor.isWaiting(payload) }
                executor.open(payload)
            }
            await eventually { run.isFinished }
        }
        #expect(executor.started == [0, 4, 1, 2, 3])
    }

    @Test("A head that fails: followers wait, other targets proceed, its slot is free during backoff")
    func failingHeadHoldsTarget() async {
        let executor = GatedExecutor()
        let clock = ManualClock()
        let s = scheduler(executor, clock: clock) {
            $0.maxConcurrency = 1
            $0.retry = RetryPolicy(maxAttempts: 3, backoff: .fixed(.seconds(10)))
        }
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["A", "A", "B", "B"])), in: &group)
            await eventually { executor.isWaiting(0) }
            executor.open(0, succeed: false)
            // A backs off for 10 s holding its head; the single slot goes to B at once.
            await eventually("B runs during A's backoff") { executor.isWaiting(2) }
            #expect(s.snapshot().backedOffTargets == 1)
            executor.open(2)
            await eventually { executor.isWaiting(3) }
            executor.open(3)
            await eventually { s.snapshot().running == 0 }
            #expect(executor.started == [0, 2, 3])  // task 1 did not overtake its failing head
            clock.advance(by: .seconds(9))
            await eventually { s.snapshot().backedOffTargets == 1 }
            #expect(!executor.isWaiting(0))
            clock.advance(by: .seconds(1))
            await eventually("the retry of task 0") { executor.isWaiting(0) }
            executor.open(0)
            await eventually { executor.isWaiting(1) }
            executor.open(1)
            await eventually { run.isFinished }
            #expect(run.summary?.retries == 1)
            #expect(run.summary?.succeeded == 4)
        }
        #expect(executor.events.filter { $0.kind == .start }.map(\.attempt) == [1, 1, 1, 2, 1])
    }

    @Test("A poison head under deadLetter: exactly one dead letter, no follower runs early")
    func poisonHeadDeadLetter() async {
        let executor = GatedExecutor()
        let clock = ManualClock()
        let deadLetters = StateLock<[Int]>([])
        let hooks = SchedulerHooks<Int>(attemptFinished: { record in
            if case .deadLettered = record.disposition { deadLetters.withLock { $0.append(record.task.payload) } }
        })
        let s = scheduler(
            executor, clock: clock, { $0.retry = RetryPolicy(maxAttempts: 2, backoff: .fixed(.seconds(1))) },
            hooks: hooks)
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["P", "P"])), in: &group)
            await eventually { executor.isWaiting(0) }
            executor.open(0, succeed: false)
            await eventually { s.snapshot().backedOffTargets == 1 }
            clock.advance(by: .seconds(1))
            await eventually { executor.isWaiting(0) }
            #expect(executor.started == [0, 0])
            executor.open(0, succeed: false)
            await eventually("the follower after the dead letter") { executor.isWaiting(1) }
            executor.open(1)
            await eventually { run.isFinished }
            #expect(run.summary?.deadLettered == 1)
            #expect(run.summary?.failed == 1)
            #expect(run.summary?.succeeded == 1)
        }
        #expect(deadLetters.withLock { $0 } == [0])
    }

    @Test("A poison head under park: the target stops; release and drain resume it")
    func poisonHeadPark() async {
        let executor = GatedExecutor()
        let deadLetters = StateLock<[Int]>([])
        let hooks = SchedulerHooks<Int>(attemptFinished: { record in
            if case .deadLettered = record.disposition { deadLetters.withLock { $0.append(record.task.payload) } }
        })
        let s = scheduler(executor, { $0.onExhausted = .park }, hooks: hooks)
        let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
        for item in tasks(["P", "P", "Q", "P"]) { input.yield(item) }
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, source, in: &group)
            await eventually { executor.isWaiting(0) && executor.isWaiting(2) }
            executor.open(0, succeed: false)
            executor.open(2)
            await eventually { s.snapshot().parkedTargets == 1 && s.snapshot().running == 0 }
            #expect(executor.started == [0, 2])
            #expect(s.release("Q") == .unknownTarget)
            // Release: the head runs again with fresh attempts, then its followers.
            #expect(s.release("P") == .done)
            await eventually { executor.isWaiting(0) }
            executor.open(0, succeed: false)
            await eventually { s.snapshot().parkedTargets == 1 && s.snapshot().running == 0 }
            // Drain: every queued task of P goes to the dead letters; later tasks of P run.
            #expect(s.drain("P") == .done)
            #expect(deadLetters.withLock { $0 } == [0, 1, 3])
            input.yield(TaskItem(targetId: "P", payload: 4))
            await eventually { executor.isWaiting(4) }
            executor.open(4)
            input.finish()
            await eventually { run.isFinished }
            #expect(run.summary?.succeeded == 2)
            #expect(run.summary?.deadLettered == 3)
        }
        #expect(executor.started == [0, 2, 0, 4])
    }

    @Test("Parked targets end a finite run and are reported with their tasks")
    func parkedAtEnd() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) { $0.onExhausted = .park }
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["P", "P", "Q"])), in: &group)
            await eventually { executor.isWaiting(0) && executor.isWaiting(2) }
            executor.open(0, succeed: false)
            executor.open(2)
            await eventually { run.isFinished }
            let summary = run.summary!
            #expect(summary.parked == 2)
            #expect(summary.failed == 1)
            #expect(summary.unfinished.map(\.task.payload) == [0, 1])
            #expect(summary.unfinished.map(\.attempts) == [1, 0])
            #expect(summary.unfinished.allSatisfy { $0.reason == .parked })
        }
    }

    @Test("A non-retryable error skips the remaining attempts; retry-after overrides the backoff")
    func errorClassification() async {
        let clock = ManualClock()
        let attempts = StateLock<[Int: Int]>([:])
        let executor = ClosureExecutor<Int> { task, context in
            attempts.withLock { $0[task.payload, default: 0] += 1 }
            if task.payload == 0 { throw NonRetryableError(TestFailure.failed(0)) }
            if task.payload == 1, context.attempt == 1 {
                throw RetryAfterError(after: .seconds(30), TestFailure.failed(1))
            }
        }
        let s = Scheduler(
            executor: executor,
            configuration: SchedulerConfiguration(retry: RetryPolicy(maxAttempts: 5, backoff: .fixed(.seconds(1)))),
            clock: clock)
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["a", "b"])), in: &group)
            await eventually { s.snapshot().backedOffTargets == 1 && s.snapshot().running == 0 }
            clock.advance(by: .seconds(29))
            await eventually { s.snapshot().backedOffTargets == 1 }
            #expect(attempts.withLock { $0[1] } == 1)
            clock.advance(by: .seconds(1))
            await eventually { run.isFinished }
            #expect(run.summary?.deadLettered == 1)
            #expect(run.summary?.succeeded == 1)
        }
        #expect(attempts.withLock { $0 } == [0: 1, 1: 2])
    }

    @Test("A timeout cancels the attempt; an executor that ignores it never overlaps its retry")
    func timeoutIgnoringCancellation() async {
        let executor = GatedExecutor(ignoresCancellation: true)
        let clock = ManualClock()
        let s = scheduler(executor, clock: clock) {
            $0.timeout = .seconds(5)
            $0.retry = RetryPolicy(maxAttempts: 2, backoff: .fixed(.zero))
        }
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["A", "A"])), in: &group)
            await eventually { executor.isWaiting(0) && clock.sleeperCount == 1 }
            clock.advance(by: .seconds(5))
            // Timed out, but still inside the executor: the target stays busy, the slot held.
            for _ in 0..<1000 { await Task.yield() }
            #expect(executor.started == [0])
            #expect(s.snapshot().running == 1)
            executor.open(0)
            await eventually("the retry after the executor returned") { executor.isWaiting(0) }
            executor.open(0)
            await eventually { executor.isWaiting(1) }
            executor.open(1)
            await eventually { run.isFinished }
            #expect(run.summary?.retries == 1)
        }
        #expect(executor.violations.isEmpty)
        #expect(executor.events.map(\.kind) == [.start, .end, .start, .end, .start, .end])
    }

    @Test("A timeout cancels an executor that honours cancellation")
    func timeoutCancels() async {
        let clock = ManualClock()
        let errors = StateLock<[String]>([])
        let executor = ClosureExecutor<Int> { _, _ in try await clock.sleep(for: .seconds(60)) }
        let hooks = SchedulerHooks<Int>(attemptFinished: { record in
            errors.withLock { $0.append(record.error.map { "\($0)" } ?? "none") }
        })
        let s = Scheduler(
            executor: executor, configuration: SchedulerConfiguration(timeout: .seconds(2)), clock: clock, hooks: hooks)
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["A"])), in: &group)
            await eventually { clock.sleeperCount == 2 }
            clock.advance(by: .seconds(2))
            await eventually { run.isFinished }
            #expect(run.summary?.deadLettered == 1)
        }
        #expect(errors.withLock { $0 } == ["timed out after 2.0 seconds"])
    }

    @Test("Back-pressure: the intake stops pulling while the buffer is full")
    func backPressure() async {
        let executor = GatedExecutor()
        let pulled = Counter()
        let s = scheduler(executor) {
            $0.maxConcurrency = 1
            $0.bufferSize = 10
        }
        let source = CountingSource(count: 1000, pulled: pulled)
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, source, in: &group)
            await eventually { executor.isWaiting(0) && s.snapshot().intakeWaitingForRoom }
            for _ in 0..<1000 { await Task.yield() }
            // At most one running and ten buffered: nothing more was pulled.
            #expect(pulled.load() <= 11)
            #expect(s.snapshot().queued <= 10)
            s.shutdown(gracePeriod: .zero)
            executor.open(0)
            await eventually { run.isFinished }
            // Every pulled task is accounted for: none finished, all are reported cancelled.
            #expect(run.summary?.cancelled == pulled.load())
            #expect(run.summary?.admitted == pulled.load())
        }
    }

    @Test("Unordered mode: a per-target limit above 1 runs that many of one target")
    func unorderedMode() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) { $0.perTargetLimit = 3 }
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(Array(repeating: "A", count: 5))), in: &group)
            await eventually { executor.waitingCount == 3 }
            #expect(s.snapshot().running == 3)
            for i in 0..<5 {
                await eventually { executor.isWaiting(i) }
                executor.open(i)
            }
            await eventually { run.isFinished }
            #expect(run.summary?.maxRunning == 3)
        }
    }

    @Test("The same target arriving from several producers never overlaps and keeps each producer's order")
    func severalSources() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) { $0.maxConcurrency = 4 }
        let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, source, in: &group)
            await withTaskGroup(of: Void.self) { producers in
                for producer in 0..<3 {
                    producers.addTask {
                        for k in 0..<20 {
                            input.yield(
                                TaskItem(
                                    targetId: k % 2 == 0 ? "shared" : .integer(Int64(producer)),
                                    payload: producer * 100 + k))
                            await Task.yield()
                        }
                    }
                }
            }
            input.finish()
            var opened = Set<Int>()
            while opened.count < 60 {
                await eventually { executor.waitingCount > 0 }
                for p in 0..<3 {
                    for k in 0..<20 where executor.isWaiting(p * 100 + k) && opened.insert(p * 100 + k).inserted {
                        executor.open(p * 100 + k)
                    }
                }
            }
            await eventually { run.isFinished }
            #expect(run.summary?.succeeded == 60)
        }
        #expect(executor.violations.isEmpty)
        let shared = executor.started.filter { $0 % 2 == 0 }
        for producer in 0..<3 {
            let mine = shared.filter { $0 / 100 == producer }
            #expect(mine == mine.sorted())
        }
    }

    @Test("Shutdown during backoff reports the task with its attempts")
    func shutdownDuringBackoff() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) { $0.retry = RetryPolicy(maxAttempts: 3, backoff: .fixed(.seconds(60))) }
        let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
        input.yield(TaskItem(targetId: "A", payload: 0))
        input.yield(TaskItem(targetId: "A", payload: 1))
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, source, in: &group)
            await eventually { executor.isWaiting(0) }
            executor.open(0, succeed: false)
            await eventually { s.snapshot().backedOffTargets == 1 }
            s.shutdown(gracePeriod: .seconds(30))  // the source never ends: shutdown stops it
            await eventually { run.isFinished }
            let summary = run.summary!
            #expect(summary.cancelled == 2)
            #expect(summary.unfinished.map(\.task.payload) == [0, 1])
            #expect(summary.unfinished.map(\.attempts) == [1, 0])
            #expect(summary.unfinished.allSatisfy { $0.reason == .shutdown })
        }
    }

    @Test("Shutdown during a long task: grace period, then cancellation; nothing new starts")
    func shutdownDuringLongTask() async {
        let clock = ManualClock()
        let started = StateLock<[Int]>([])
        let executor = ClosureExecutor<Int> { task, _ in
            started.withLock { $0.append(task.payload) }
            try await clock.sleep(for: .seconds(3600))
        }
        let s = Scheduler(executor: executor, configuration: SchedulerConfiguration(maxConcurrency: 1), clock: clock)
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["A", "B", "A"])), in: &group)
            await eventually { clock.sleeperCount == 1 }
            s.shutdown(gracePeriod: .seconds(10))
            await eventually { clock.sleeperCount == 2 }  // the executor and the grace timer
            clock.advance(by: .seconds(9))
            for _ in 0..<500 { await Task.yield() }
            #expect(!run.isFinished)
            clock.advance(by: .seconds(1))
            await eventually { run.isFinished }
            let summary = run.summary!
            #expect(summary.cancelled == 3)
            #expect(summary.unfinished.map(\.attempts) == [1, 0, 0])
        }
        #expect(started.withLock { $0 } == [0])
    }

    @Test("Shutdown with a zero grace period cancels at once; so does cancelling run")
    func shutdownZeroGrace() async {
        let clock = ManualClock()
        let executor = ClosureExecutor<Int> { _, _ in try await clock.sleep(for: .seconds(3600)) }
        let s = Scheduler(executor: executor, configuration: SchedulerConfiguration(), clock: clock)
        let summary = await withTaskGroup(of: RunSummary<Int>.self) { group in
            group.addTask { await s.run(ListSource(tasks(["A", "B", "A"]))) }
            await eventually { clock.sleeperCount == 2 }
            group.cancelAll()
            return await group.next()!
        }
        #expect(summary.cancelled == 3)
        #expect(summary.succeeded == 0)
    }

    @Test("Emptied targets leave no state behind")
    func emptiedTargetsRemoved() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) { $0.maxConcurrency = 8 }
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks((0..<50).map { TargetID.integer(Int64($0 % 10)) })), in: &group)
            // 8 running, and the intake goes on to queue the tasks of targets 8 and 9.
            await eventually("10 targets known") { executor.waitingCount == 8 && s.snapshot().knownTargets == 10 }
            var opened = 0
            while opened < 50 {
                for i in 0..<50 where executor.isWaiting(i) {
                    executor.open(i)
                    opened += 1
                }
                await Task.yield()
            }
            await eventually { run.isFinished }
        }
        #expect(s.snapshot().knownTargets == 0)
        #expect(s.snapshot().queued == 0)
    }

    @Test("An input that throws ends intake; admitted tasks still run and the error is reported")
    func inputError() async {
        let counter = Atomic<Int>(0)
        let executor = SynchronousExecutor<Int> { _, _ in counter.add(1, ordering: .relaxed) }
        let summary = await run(executor: executor, tasks: FailingSource(failAfter: 3), maxConcurrency: 2)
        #expect(summary.succeeded == 3)
        #expect(counter.load(ordering: .relaxed) == 3)
        #expect(summary.inputError is TestFailure)
    }

    @Test("Hooks see queue wait, execution time, attempts and dispositions")
    func hooks() async {
        let clock = ManualClock()
        let records = StateLock<[(Int, Int, String, Duration)]>([])
        let waits = StateLock<[Duration]>([])
        let executor = ClosureExecutor<Int> { task, context in
            try await clock.sleep(for: .seconds(2))
            if task.payload == 0, context.attempt == 1 { throw TestFailure.failed(0) }
        }
        let hooks = SchedulerHooks<Int>(
            attemptStarted: { _, _, wait in waits.withLock { $0.append(wait) } },
            attemptFinished: { record in
                records.withLock {
                    $0.append(
                        (record.task.payload, record.context.attempt, "\(record.disposition)", record.executionTime))
                }
            })
        let s = Scheduler(
            executor: executor,
            configuration: SchedulerConfiguration(
                maxConcurrency: 1, retry: RetryPolicy(maxAttempts: 2, backoff: .fixed(.seconds(1)))),
            clock: clock, hooks: hooks)
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["A", "B"])), in: &group)
            while !run.isFinished {
                await eventually { clock.sleeperCount > 0 || run.isFinished }
                if let next = clock.nextDeadline { clock.advance(to: next) }
            }
        }
        let seen = records.withLock { $0 }
        #expect(seen.map(\.0) == [0, 1, 0])
        #expect(seen.map(\.1) == [1, 1, 2])
        #expect(seen.map(\.2) == ["retrying(after: 1.0 seconds)", "succeeded", "succeeded"])
        #expect(seen.allSatisfy { $0.3 == .seconds(2) })
        // B waited 2 s for the slot; A's retry became due at 3 s and started at 4 s.
        #expect(waits.withLock { $0 } == [.zero, .seconds(2), .seconds(1)])
    }
    @Test("Pool caps: a full pool holds its tasks back without delaying other pools")
    func poolCaps() async {
        let executor = GatedExecutor()
        let s = scheduler(executor) {
            $0.maxConcurrency = 3
            $0.poolLimits = [nil, 1]
        }
        let items = [
            TaskItem(targetId: "a", payload: 0, pool: 1),
            TaskItem(targetId: "b", payload: 1, pool: 1),
            TaskItem(targetId: "c", payload: 2),
            TaskItem(targetId: "d", payload: 3),
        ]
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(items), in: &group)
            await eventually("a, c and d run; b waits for pool 1") {
                executor.isWaiting(0) && executor.isWaiting(2) && executor.isWaiting(3)
            }
            #expect(!executor.isWaiting(1))
            executor.open(2)
            await eventually { s.snapshot().running == 2 && s.snapshot().poolBlockedTargets == 1 }
            #expect(!executor.isWaiting(1))  // a free global slot does not lift the pool's cap
            executor.open(0)
            await eventually("b runs once a finished") { executor.isWaiting(1) }
            executor.open(1)
            executor.open(3)
            await eventually { run.isFinished }
            #expect(run.summary?.succeeded == 4)
        }
    }

    @Test("A deferred immediate attempt is finished by execute, never started twice")
    func deferredImmediateAttempt() async {
        let executor = DeferringExecutor()
        let summary = await run(
            executor: executor, tasks: ListSource(tasks((0..<200).map { TargetID.integer(Int64($0 % 7)) })),
            maxConcurrency: 3)
        #expect(summary.succeeded == 200)
        let calls = executor.calls.withLock { $0 }
        // Every task was tried inline once; the odd ones deferred and were finished by execute once.
        #expect(calls.immediate.sorted() == Array(0..<200))
        #expect(calls.execute.sorted() == (0..<200).filter { $0 % 2 == 1 })
    }
}

/// Finishes even payloads inline and defers odd ones to `execute`.
final class DeferringExecutor: TaskItemExecutor, Sendable {
    let calls = StateLock<(immediate: [Int], execute: [Int])>(([], []))
    var supportsImmediateExecution: Bool { true }

    func executeImmediately(_ task: TaskItem<Int>, context: ExecutionContext) -> ImmediateOutcome {
        calls.withLock { $0.immediate.append(task.payload) }
        return task.payload % 2 == 0 ? .succeeded : .deferred
    }

    func execute(_ task: TaskItem<Int>, context: ExecutionContext) async throws {
        calls.withLock { $0.execute.append(task.payload) }
        await Task.yield()
    }
}

final class Counter: Sendable {
    let value = Atomic<Int>(0)
    func load() -> Int { value.load(ordering: .relaxed) }
}

/// Counts how many tasks were pulled.
struct CountingSource: AsyncSequence, Sendable {
    let count: Int
    let pulled: Counter

    struct AsyncIterator: AsyncIteratorProtocol {
        let count: Int
        let pulled: Counter
        var index = 0
        mutating func next() async -> TaskItem<Int>? {
            guard index < count else { return nil }
            pulled.value.add(1, ordering: .relaxed)
            defer { index += 1 }
            return TaskItem(targetId: "A", payload: index)
        }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(count: count, pulled: pulled) }
}

struct FailingSource: AsyncSequence, Sendable {
    let failAfter: Int
    struct AsyncIterator: AsyncIteratorProtocol {
        let failAfter: Int
        var index = 0
        mutating func next() async throws -> TaskItem<Int>? {
            guard index < failAfter else { throw TestFailure.failed(index) }
            defer { index += 1 }
            return TaskItem(targetId: .integer(Int64(index)), payload: index)
        }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(failAfter: failAfter) }
}

/// The intake passes between the intake task and the runners it spawns: an executor that
/// mostly finishes without suspending, some attempts that suspend, and a source that suspends
/// between bursts, with small buffers. Every task runs once, in order per target, under the cap.
@Suite struct IntakeHandOverTests {
    final class Recorder: Sendable {
        struct State {
            var running: [TargetID: Int] = [:]
            var total = 0
            var maxTotal = 0
            var order: [TargetID: [Int]] = [:]
            var overlaps = 0
        }
        let state = StateLock(State())

        func enter(_ task: TaskItem<Int>) {
            state.withLock { state in
                if state.running[task.targetId, default: 0] > 0 { state.overlaps += 1 }
                state.running[task.targetId, default: 0] += 1
                state.total += 1
                state.maxTotal = max(state.maxTotal, state.total)
                state.order[task.targetId, default: []].append(task.payload)
            }
        }

        func leave(_ task: TaskItem<Int>) {
            state.withLock { state in
                state.running[task.targetId, default: 0] -= 1
                state.total -= 1
            }
        }
    }

    @Test("Runners hand the intake back and forth; nothing is lost, reordered or overlapped", arguments: [1, 3, 64])
    func handOver(buffer: Int) async {
        let recorder = Recorder()
        let executor = ClosureExecutor<Int> { task, _ in
            recorder.enter(task)
            // One attempt in five suspends; the others finish without suspending.
            if task.payload % 5 == 0 { await Task.yield() }
            recorder.leave(task)
        }
        var configuration = SchedulerConfiguration(maxConcurrency: 4, bufferSize: buffer)
        configuration.retry = .none
        let scheduler = Scheduler(executor: executor, configuration: configuration, clock: ContinuousClock())
        let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
        let count = 3000
        async let summary = scheduler.run(source)
        for n in 0..<count {
            input.yield(TaskItem(targetId: .integer(Int64(n % 7)), payload: n))
            if n % 97 == 0 { await Task.yield() }  // the source suspends between bursts
        }
        input.finish()
        let result = await summary
        #expect(result.succeeded == count)
        recorder.state.withLock { state in
            #expect(state.overlaps == 0)
            #expect(state.maxTotal <= 4)
            for (target, order) in state.order {
                #expect(order == order.sorted(), "target \(target) ran out of order")
            }
            #expect(state.order.values.map(\.count).reduce(0, +) == count)
        }
    }

    struct Flaky: Error {}

    /// Opens once; waiters before and after pass.
    final class Gate: Sendable {
        let state = StateLock<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
        func wait() async {
            await withCheckedContinuation { continuation in
                let open = state.withLock { state in
                    if !state.open { state.waiters.append(continuation) }
                    return state.open
                }
                if open { continuation.resume() }
            }
        }
        func open() {
            let waiters = state.withLock { state in
                state.open = true
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    /// An operator parks a target while its task runs without target state (before the attempt
    /// first suspends): the park holds, later tasks of the target wait for the release.
    @Test("Parking a target whose task runs without target state holds its later tasks")
    func parkDuringDetachedAttempt() async {
        let recorder = Recorder()
        let gate = Gate()
        let seen = StateLock<(park: TargetCommandResult?, knownTargets: Int?)>((nil, nil))
        let holder = StateLock<Scheduler<ClosureExecutor<Int>, ManualClock>?>(nil)
        let executor = ClosureExecutor<Int> { task, _ in
            recorder.enter(task)
            if task.payload == 0, let scheduler = holder.withLock({ $0 }) {
                let known = scheduler.snapshot().knownTargets  // 0: the attempt runs detached
                let park = scheduler.park(task.targetId)
                seen.withLock { $0 = (park, known) }
                await gate.wait()
            }
            recorder.leave(task)
        }
        let scheduler = Scheduler(
            executor: executor, configuration: SchedulerConfiguration(maxConcurrency: 2), clock: ManualClock())
        holder.withLock { $0 = scheduler }
        let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
        async let summary = scheduler.run(source)
        for n in 0..<4 { input.yield(TaskItem(targetId: .integer(Int64(n % 2)), payload: n)) }
        await eventually("target 1's tasks ran while task 0 waits") {
            recorder.state.withLock { $0.order[.integer(1), default: []].count == 2 && $0.total == 1 }
        }
        #expect(seen.withLock { $0.knownTargets } == 0)
        #expect(seen.withLock { $0.park } == .done)
        gate.open()
        await eventually("task 0 finished, its target parked") {
            let snapshot = scheduler.snapshot()
            return snapshot.running == 0 && snapshot.parkedTargets == 1 && snapshot.queued == 1
        }
        #expect(recorder.state.withLock { $0.order[.integer(0)] } == [0], "task 2 ran on a parked target")
        #expect(scheduler.release(0) == .done)
        input.finish()
        let result = await summary
        #expect(result.succeeded == 4)
        #expect(result.failed == 0)
        #expect(recorder.state.withLock { $0.order[.integer(0)] } == [0, 2])
    }

    /// Without hooks or timeouts, a task whose target has no state runs without making any. When
    /// such an attempt suspends, the intake gives the target state before it admits anything else:
    /// the target's later tasks wait, other targets go on, and failures are retried as usual.
    @Test("A task started without target state suspends: its target's later tasks wait, others run")
    func detachedAttemptSuspends() async {
        let recorder = Recorder()
        let gate = Gate()
        let executor = ClosureExecutor<Int> { task, context in
            recorder.enter(task)
            if task.payload == 0 { await gate.wait() }
            recorder.leave(task)
            // Tasks 3, 13, 23, ... fail their first attempt, suspended or not.
            if task.payload % 10 == 3, context.attempt == 1 {
                if task.payload % 20 == 3 { await Task.yield() }
                throw Flaky()
            }
        }
        let configuration = SchedulerConfiguration(
            maxConcurrency: 3, bufferSize: 100, retry: RetryPolicy(maxAttempts: 2, backoff: .fixed(.zero)))
        let scheduler = Scheduler(executor: executor, configuration: configuration, clock: ManualClock())
        let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
        let count = 50
        async let summary = scheduler.run(source)
        for n in 0..<count { input.yield(TaskItem(targetId: .integer(Int64(n % 5)), payload: n)) }
        // Every task of targets 1...4 finishes while task 0 (target 0) holds its target.
        var finished = false
        for _ in 0..<100_000 where !finished {
            await Task.yield()
            finished = recorder.state.withLock { state in
                (1...4).allSatisfy { state.order[.integer(Int64($0)), default: []].count == 10 + ($0 == 3 ? 5 : 0) }
                    && state.total == 1
            }
        }
        #expect(finished, "the other targets did not finish while target 0 was held")
        recorder.state.withLock { state in
            #expect(state.order[.integer(0)] == [0], "a task of target 0 started while its first task ran")
        }
        gate.open()
        input.finish()
        let result = await summary
        #expect(result.succeeded == count)
        #expect(result.retries == 5)
        recorder.state.withLock { state in
            #expect(state.overlaps == 0)
            #expect(state.maxTotal <= 3)
            #expect(state.order[.integer(0)] == Array(stride(from: 0, to: count, by: 5)))
            for (target, order) in state.order {
                #expect(order == order.sorted(), "target \(target) ran out of order")
            }
        }
    }
}

/// The intake's hand-over protocol alone (`Runner`), with the spawner and the runner racing on
/// real threads. Each race must end one consistent way; under ThreadSanitizer (CI) it also checks
/// the ordering of the runner's `detached` field.
@Suite struct RunnerHandOverTests {
    enum RunnerEnd: Equatable {
        case takenOver(adopted: AdoptedTarget?, expected: TargetID?)
        case handedBack(Int)
        case finished

        static func == (lhs: RunnerEnd, rhs: RunnerEnd) -> Bool {
            switch (lhs, rhs) {
            case (.takenOver(let a, let x), .takenOver(let b, let y)):
                return a?.slot == b?.slot && a?.generation == b?.generation && x == y
            case (.handedBack(let a), .handedBack(let b)): return a == b
            case (.finished, .finished): return true
            default: return false
            }
        }
    }

    /// A runner that runs up to `steps` attempts; even steps are detached on target `step`.
    static func runRunner(_ runner: Runner<Int>, steps: Int, initial: TargetID?) -> RunnerEnd {
        var step = 0
        var detached = initial
        while true {
            switch runner.executed() {
            case .takenOver(let adopted):
                return .takenOver(adopted: adopted, expected: detached)
            case .holding:
                step += 1
                let isEnd = step == steps
                detached = step % 2 == 0 ? .integer(Int64(step)) : nil
                switch runner.proceed(with: step, detached: detached, isEnd: isEnd) {
                case .runInline: continue
                case .handedBack: return .handedBack(step)
                case .finishIntake: return .finished
                }
            }
        }
    }

    @Test("The spawner takes back an executing runner and adopts its detached target first")
    func takeOverExecuting() async {
        let runner = Runner<Int>(detached: .integer(7))
        let adopted = StateLock<[TargetID]>([])
        let regained = await runner.regain { id in
            adopted.withLock { $0.append(id) }
            return AdoptedTarget(slot: 3, generation: 9)
        }
        guard case .intake = regained else {
            Issue.record("expected the intake back, got \(regained)")
            return
        }
        #expect(adopted.withLock { $0 } == [.integer(7)])
        let end = Self.runRunner(runner, steps: 1, initial: .integer(7))
        #expect(end == .takenOver(adopted: AdoptedTarget(slot: 3, generation: 9), expected: .integer(7)))
    }

    @Test("A runner that ends the input first: the spawner finds it finished")
    func runnerEndsFirst() async {
        let runner = Runner<Int>(detached: nil)
        #expect(Self.runRunner(runner, steps: 2, initial: nil) == .finished)
        let regained = await runner.regain { _ in AdoptedTarget(slot: 0, generation: 0) }
        guard case .finished = regained else {
            Issue.record("expected finished, got \(regained)")
            return
        }
    }

    @Test("Spawner and runner race: each hand-over ends one consistent way")
    func race() async {
        var ends: [String: Int] = [:]
        for iteration in 0..<3000 {
            let initial: TargetID? = iteration % 2 == 0 ? .integer(-1) : nil
            let runner = Runner<Int>(detached: initial)
            let steps = 1 + iteration % 4
            let adopted = StateLock<TargetID?>(nil)
            let runnerEnd = Task.detached { Self.runRunner(runner, steps: steps, initial: initial) }
            let regained = await runner.regain { id in
                adopted.withLock { $0 = id }
                return AdoptedTarget(slot: Int32(iteration), generation: 1)
            }
            let end = await runnerEnd.value
            switch (regained, end) {
            case (.intake, .takenOver(let slot, let expected)):
                #expect(adopted.withLock { $0 } == expected, "iteration \(iteration): adopted the wrong target")
                #expect((slot != nil) == (expected != nil), "iteration \(iteration)")
                ends["taken over", default: 0] += 1
            case (.handed(let value), .handedBack(let sent)):
                #expect(value == sent, "iteration \(iteration)")
                #expect(adopted.withLock { $0 } == nil)
                ends["handed back", default: 0] += 1
            case (.finished, .finished):
                #expect(adopted.withLock { $0 } == nil)
                ends["finished", default: 0] += 1
            default:
                Issue.record("iteration \(iteration): spawner \(regained), runner \(end)")
            }
        }
        #expect(ends.values.reduce(0, +) == 3000)
    }
}

/// The intake records the successes of the detached attempts it runs inline with its next
/// admission (``IntakeDebt``). While it waits for its source, code that needs exact counts must
/// absorb them: otherwise a finished task would hold its slot until the source yields again.
@Suite(.serialized) struct IntakeDebtTests {
    struct Refused: Error {}

    /// A synchronous executor that fails the first attempt of payload 0, holds payload 9 until
    /// the test opens its gate, and records every start.
    final class Recorder: Sendable {
        let starts = StateLock<[(payload: Int, attempt: Int)]>([])
        let gateEntered = Atomic<Bool>(false)
        let gateOpen = Atomic<Bool>(false)
        var executor: SynchronousExecutor<Int> {
            SynchronousExecutor { task, context in
                self.starts.withLock { $0.append((task.payload, context.attempt)) }
                if task.payload == 0, context.attempt == 1 { throw Refused() }
                if task.payload == 9 {
                    self.gateEntered.store(true, ordering: .releasing)
                    while !self.gateOpen.load(ordering: .acquiring) { sched_yield() }
                }
            }
        }
        func started(_ payload: Int, attempt: Int) -> Bool {
            starts.withLock { $0.contains { $0.payload == payload && $0.attempt == attempt } }
        }
    }

    @Test("A retry gets the only slot while the intake, owing a success, waits for its source")
    func retryWhileIntakeWaits() async {
        let recorder = Recorder()
        await retryWhileIntakeWaits(recorder.executor, recorder)
        // An async executor: the runner holding the intake owes the success.
        let asyncRecorder = Recorder()
        let inner = asyncRecorder.executor
        await retryWhileIntakeWaits(
            ClosureExecutor<Int> { task, context in try inner.body(task, context) }, asyncRecorder)
    }

    func retryWhileIntakeWaits<E: TaskItemExecutor>(_ executor: E, _ recorder: Recorder) async where E.Payload == Int {
        let clock = ManualClock()
        var configuration = SchedulerConfiguration(maxConcurrency: 1)
        configuration.retry = RetryPolicy(maxAttempts: 2, backoff: .fixed(.seconds(1)))
        let s = Scheduler(executor: executor, configuration: configuration, clock: clock, random: { 0.5 })
        await withTaskGroup(of: Void.self) { group in
            let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
            let run = start(s, source, in: &group)
            input.yield(TaskItem(targetId: "A", payload: 0))  // fails, backs off for 1 s
            input.yield(TaskItem(targetId: "B", payload: 1))  // succeeds detached: the intake owes it
            await eventually("both ran, the intake waits", limit: .seconds(10)) {
                recorder.started(1, attempt: 1) && s.snapshot().backedOffTargets == 1
            }
            // The owed success does not count as running, though the intake has not recorded it.
            #expect(s.snapshot().running == 0)
            clock.advance(by: .seconds(1))
            // The retry needs the only slot; the source yields nothing meanwhile.
            await eventually("the retry ran while the source waited", limit: .seconds(10)) {
                recorder.started(0, attempt: 2)
            }
            input.finish()
            await eventually(limit: .seconds(10)) { run.isFinished }
            if !run.isFinished { s.shutdown(gracePeriod: .zero) }  // fail, do not hang
            #expect(run.summary?.succeeded == 2)
            #expect(run.summary?.retries == 1)
            #expect(run.summary?.maxRunning == 1)
        }
    }

    @Test("A shutdown while the intake owes successes and waits for its source ends at once, counting them")
    func shutdownWhileIntakeWaits() async {
        let recorder = Recorder()
        let clock = ManualClock()
        let s = Scheduler(
            executor: recorder.executor, configuration: SchedulerConfiguration(maxConcurrency: 2), clock: clock)
        await withTaskGroup(of: Void.self) { group in
            let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
            let run = start(s, source, in: &group)
            for payload in 1...3 { input.yield(TaskItem(targetId: .integer(Int64(payload)), payload: payload)) }
            await eventually(limit: .seconds(10)) { recorder.started(3, attempt: 1) }
            // Nothing runs: the shutdown needs no grace (the manual clock never ends it).
            s.shutdown(gracePeriod: .seconds(3600))
            await eventually("the run ended", limit: .seconds(10)) { run.isFinished }
            if !run.isFinished { s.shutdown(gracePeriod: .zero) }  // fail, do not hang
            #expect(run.summary?.succeeded == 3)
            input.finish()
        }
    }

    // Found in review: the state starts to wait while the detached attempt still runs, before
    // the intake owes its success; the success must then be settled at once.
    @Test("A retry that became ready during a detached attempt gets its slot when the attempt succeeds")
    func retryReadyDuringDetachedAttempt() async {
        let recorder = Recorder()
        await retryReadyDuringDetachedAttempt(recorder.executor, recorder)
        let asyncRecorder = Recorder()
        let inner = asyncRecorder.executor
        await retryReadyDuringDetachedAttempt(
            ClosureExecutor<Int> { task, context in try inner.body(task, context) }, asyncRecorder)
    }

    func retryReadyDuringDetachedAttempt<E: TaskItemExecutor>(_ executor: E, _ recorder: Recorder) async
    where E.Payload == Int {
        let clock = ManualClock()
        var configuration = SchedulerConfiguration(maxConcurrency: 1)
        configuration.retry = RetryPolicy(maxAttempts: 2, backoff: .fixed(.seconds(1)))
        let s = Scheduler(executor: executor, configuration: configuration, clock: clock, random: { 0.5 })
        await withTaskGroup(of: Void.self) { group in
            let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
            let run = start(s, source, in: &group)
            input.yield(TaskItem(targetId: "A", payload: 0))  // fails, backs off for 1 s
            input.yield(TaskItem(targetId: "B", payload: 9))  // detached, held at the gate
            await eventually("B runs, A backs off", limit: .seconds(10)) {
                recorder.gateEntered.load(ordering: .acquiring) && s.snapshot().backedOffTargets == 1
            }
            clock.advance(by: .seconds(1))
            await eventually("A is ready, without a slot", limit: .seconds(10)) { s.snapshot().readyTargets == 1 }
            recorder.gateOpen.store(true, ordering: .releasing)
            await eventually("the retry ran while the source waited", limit: .seconds(10)) {
                recorder.started(0, attempt: 2)
            }
            input.finish()
            await eventually(limit: .seconds(10)) { run.isFinished }
            if !run.isFinished { s.shutdown(gracePeriod: .zero) }  // fail, do not hang
            #expect(run.summary?.succeeded == 2)
        }
    }

    @Test("A shutdown that begins during a detached attempt ends the run when the attempt succeeds")
    func shutdownDuringDetachedAttempt() async {
        let recorder = Recorder()
        let s = Scheduler(
            executor: recorder.executor, configuration: SchedulerConfiguration(maxConcurrency: 2),
            clock: ManualClock())
        await withTaskGroup(of: Void.self) { group in
            let (source, input) = AsyncStream<TaskItem<Int>>.makeStream()
            let run = start(s, source, in: &group)
            input.yield(TaskItem(targetId: "B", payload: 9))
            await eventually(limit: .seconds(10)) { recorder.gateEntered.load(ordering: .acquiring) }
            s.shutdown(gracePeriod: .seconds(3600))
            recorder.gateOpen.store(true, ordering: .releasing)
            await eventually("the run ended", limit: .seconds(10)) { run.isFinished }
            if !run.isFinished { s.shutdown(gracePeriod: .zero) }  // fail, do not hang
            #expect(run.summary?.succeeded == 1)
            input.finish()
        }
    }
}
