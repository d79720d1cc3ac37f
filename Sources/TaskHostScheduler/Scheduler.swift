import Synchronization

// Specialization: the scheduler is generic over the executor, the payload and the clock, and a
// module that imports it can only specialize what it can see. So the run path (this file,
// SchedulerState.swift, the lock) is `@inlinable`, and the internal types, properties and helpers
// it touches are `@usableFromInline` (internal, not `private`: an inlinable body cannot name a
// private declaration). Without it every task went through unspecialized generic code in this
// module: S1-S4 ran 6 times slower with an async executor, 16 to 20 times with a synchronous one.
// Operator commands and snapshots stay out of line: they are not on the per-task path.

/// The answer to an operator's command on one target.
public enum TargetCommandResult: Sendable, Hashable {
    case done
    /// The target holds no state: nothing is queued or running for it (`release`, `drain`).
    case unknownTarget
    /// `release` and `drain` act on parked targets only.
    case notParked
}

/// Runs tasks from an asynchronous sequence under the TaskHost scheduling contract
/// (`SEMANTICS.md`): a global cap, one running task per target, per-target FIFO with retries
/// holding the head, no head-of-line blocking across targets, round-robin fairness, bounded
/// memory.
///
/// Create one per run, call ``run(_:)``, and use the other methods from any task while it runs.
///
/// - Important: The executor is called concurrently for different targets, never for two
///   tasks of one target at once (unless `perTargetLimit` is above 1).
public final class Scheduler<Executor: TaskItemExecutor, C: Clock>: Sendable where C.Duration == Duration {
    public typealias Payload = Executor.Payload
    @usableFromInline
    typealias State = SchedulerState<Payload>
    @usableFromInline
    typealias Work = Dispatch<Payload>

    @usableFromInline
    let executor: Executor
    @usableFromInline
    let configuration: SchedulerConfiguration
    @usableFromInline
    let clock: C
    @usableFromInline
    let hooks: SchedulerHooks<Payload>
    @usableFromInline
    let random: @Sendable () -> Double
    @usableFromInline
    let state: StateLock<State>
    /// Successes the intake has not recorded in `state` yet (see ``IntakeDebt``).
    @usableFromInline
    let debt = IntakeDebt()
    @usableFromInline
    let started = Atomic<Bool>(false)
    @usableFromInline
    let tracksReadyTime: Bool
    @usableFromInline
    let measuresExecution: Bool
    /// The instant the scheduler's stamps count from (see ``TimerEntry``).
    @usableFromInline
    let epoch: C.Instant

    /// - Parameters:
    ///   - executor: runs the tasks.
    ///   - configuration: cap, buffer, retry, timeout and exhaustion policy.
    ///   - clock: the clock for backoff, timeouts and grace periods; tests pass a manual one.
    ///   - hooks: callbacks for metrics, results and dead letters.
    ///   - random: a source of numbers in `0..<1` for retry jitter.
    public init(
        executor: Executor,
        configuration: SchedulerConfiguration = SchedulerConfiguration(),
        clock: C,
        hooks: SchedulerHooks<Payload> = SchedulerHooks(),
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }
    ) {
        self.executor = executor
        self.configuration = configuration
        self.clock = clock
        self.hooks = hooks
        self.random = random
        self.state = StateLock(State(configuration: configuration, debt: debt))
        self.tracksReadyTime = hooks.attemptStarted != nil
        self.measuresExecution = hooks.attemptFinished != nil
        self.epoch = clock.now
    }

    /// Now, as a duration since the epoch.
    @inlinable
    @inline(__always)
    func stamp() -> Duration { epoch.duration(to: clock.now) }

    // MARK: Running

    /// Pulls every task from `tasks` and runs it; returns when the input is exhausted and every
    /// admitted task reached a final state, or after a shutdown.
    ///
    /// Cancelling the calling task shuts down at once (a zero grace period).
    /// - Important: Call it once per scheduler.
    @inlinable
    public func run<S: AsyncSequence & Sendable>(_ tasks: S) async -> RunSummary<Payload>
    where S.Element == TaskItem<Payload> {
        precondition(!started.exchange(true, ordering: .relaxed), "a Scheduler runs once; create a new one")
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.pull(tasks) }
            group.addTask { await self.runTimer() }
            await withTaskCancellationHandler {
                while true {
                    let events = await self.nextSupervisorEvents()
                    for _ in 0..<events.spawnWorkers {
                        group.addTask { await self.runWorker() }
                    }
                    if let grace = events.startGraceTimer {
                        group.addTask {
                            do {
                                try await self.clock.sleep(for: grace)
                                self.shutdown(gracePeriod: .zero)
                            } catch {}  // the run ended first
                        }
                    }
                    if events.cancelNow { group.cancelAll() }
                    if events.finished { break }
                }
            } onCancel: {
                self.shutdown(gracePeriod: .zero)
            }
            group.cancelAll()  // a pending grace timer
        }
        return state.withLock { $0.finalSummary() }
    }

    @inlinable
    func nextSupervisorEvents() async -> SupervisorEvents {
        await withUnsafeContinuation { continuation in
            if let events = state.withLock({ $0.nextSupervisorEvents(continuation) }) {
                continuation.resume(returning: events)
            }
        }
    }

    // MARK: Intake

    /// The intake: pulls tasks while the buffer has room and admits them. A task whose target is
    /// idle, with a slot free and nothing else ready, starts here at once: inline for an executor
    /// that can finish synchronously, otherwise in an immediate child task (a runner) that runs on
    /// this thread until its first suspension. While its executions do not suspend, the runner
    /// goes on pulling and starting tasks itself, so a stream of executions that never suspend
    /// costs one child task, not one each. When the runner suspends while executing, the intake
    /// comes back here at once; when it suspends while pulling, it hands the intake back with
    /// what it pulled.
    ///
    /// A source blocked in `next()` is cancelled when the run ends or the grace period expires.
    @inlinable
    func pull<S: AsyncSequence>(_ tasks: S) async where S.Element == TaskItem<Payload> {
        let cursor = IntakeCursor(tasks.makeAsyncIterator())
        await withDiscardingTaskGroup { group in
            var pulled = await pullOne(cursor)
            while true {
                if case .end(let failure) = pulled {
                    finishIntake(failure)
                    return
                }
                let runner = Runner<Pulled>(detached: pulled.detachedTarget)
                let first = pulled
                group.addImmediateTask { await self.run(first, as: runner, cursor: cursor) }
                // Here again: the runner suspended, or ended the input.
                switch await runner.regain(adopting: { target in self.state.withLock { $0.adoptRunning(target) } }) {
                case .intake: pulled = await pullOne(cursor)
                case .handed(let result): pulled = result
                case .finished: return
                }
            }
        }
    }

    @inlinable
    func finishIntake(_ failure: (any Error)?) {
        var wakeups = Wakeups<Payload>()
        state.withLock { $0.finishIntake(error: failure, &wakeups) }
        wakeups.perform()
    }

    /// What the intake pulled: a task to start in a runner, or the end of the input.
    @usableFromInline
    enum Pulled: @unchecked Sendable {
        indirect case start(Work)
        /// A task of a target without state, started without making any (see
        /// ``SchedulerState/Admission/runDetached(sequence:)``). If the runner suspends, the
        /// intake adopts the target before it admits anything else.
        case startDetached(TaskItem<Payload>, sequence: UInt64)
        case end((any Error)?)

        /// The target of a task to start detached, which the runner announces while it runs it.
        @inlinable
        var detachedTarget: TargetID? {
            if case .startDetached(let task, _) = self { return task.targetId }
            return nil
        }
    }

    /// Whether an attempt of a target without state may run detached (``SchedulerState/Admission``):
    /// only when nothing observes its start or end but the state's counters (no hooks), and, for
    /// an asynchronous attempt, no timeout has to race it.
    @inlinable
    func detaches(synchronous: Bool) -> Bool {
        hooks.attemptStarted == nil && !measuresExecution && (synchronous || configuration.timeout == nil)
    }

    /// Pulls and admits until a task must start in a runner, or the input ends. Tasks that queue
    /// behind their target, and tasks of a synchronous executor (run inline), are handled here.
    @inlinable
    @inline(__always)
    func pullOne<I: AsyncIteratorProtocol>(_ cursor: IntakeCursor<I>) async -> Pulled
    where I.Element == TaskItem<Payload> {
        // A store's hooks take the loop below without the inline and detached fast paths; this
        // one stays as it was (measured: the store's checks inside it cost 7% of S1 sync).
        if hooks.history != nil || hooks.beforeRelease != nil { return await pullOneStored(cursor) }
        let synchronous = executor.supportsImmediateExecution
        let detachable = detaches(synchronous: synchronous)
        // Successes of detached attempts run here are recorded with the next admission (see
        // IntakeDebt); every way out of this loop records them first.
        defer { settleDebt(cursor) }
        do {
            while true {
                if !cursor.hasRoom {
                    settleDebt(cursor)
                    cursor.hasRoom = await waitForRoom()
                    if !cursor.hasRoom { return .end(nil) }
                }
                guard let task = try await cursor.iterator.next(isolation: nil) else { return .end(nil) }
                let now = tracksReadyTime ? stamp() : nil
                var wakeups = Wakeups<Payload>()
                let owed = cursor.owed
                cursor.owed = 0
                let admission = state.withLock { state in
                    if owed > 0 { state.settleIntakeDebt(owed, &wakeups) }
                    let admission = state.admit(
                        task, now: now, inline: true, detachable: detachable, &wakeups)
                    cursor.hasRoom = state.intakeHasRoom
                    return admission
                }
                wakeups.perform()
                switch admission {
                case .queued:
                    break
                case .runInline(let work) where synchronous:
                    settleDebt(cursor)
                    runInline(work)
                case .runInline(let work):
                    return .start(work)
                case .runDetached(let sequence) where synchronous:
                    runDetached(task, sequence: sequence, readySince: now, cursor: cursor)
                case .runDetached(let sequence):
                    return .startDetached(task, sequence: sequence)
                }
            }
        } catch {
            return .end(error)
        }
    }

    /// ``pullOne(_:)`` for a scheduler with a store's hooks: each task's history is read at
    /// admission, and every task is queued for a worker, which still tries the executor inline
    /// first. Not run here: its end is recorded before its target is released, which suspends
    /// until the store commits, and an intake that waited for each commit cost the durable queue
    /// 2-3x the context switches and a fifth of its speed (paired, 100,000 tasks, run phase:
    /// 56,000-69,000 tasks/s inline against 88,000-104,000 queued).
    @inlinable
    func pullOneStored<I: AsyncIteratorProtocol>(_ cursor: IntakeCursor<I>) async -> Pulled
    where I.Element == TaskItem<Payload> {
        let history = hooks.history
        do {
            while true {
                if !cursor.hasRoom {
                    cursor.hasRoom = await waitForRoom()
                    if !cursor.hasRoom { return .end(nil) }
                }
                guard let task = try await cursor.iterator.next(isolation: nil) else { return .end(nil) }
                let prior = history?(task)
                let now = tracksReadyTime || (prior?.startAfter ?? .zero) > .zero ? stamp() : nil
                var wakeups = Wakeups<Payload>()
                let admission = state.withLock { state in
                    let admission =
                        if let prior {
                            state.admit(task, history: prior, now: now, inline: false, &wakeups)
                        } else {
                            state.admit(task, now: now, inline: false, detachable: false, &wakeups)
                        }
                    cursor.hasRoom = state.intakeHasRoom
                    return admission
                }
                wakeups.perform()
                switch admission {
                case .queued, .runDetached:
                    break  // never detached: `detachable` is false
                case .runInline(let work):
                    return .start(work)
                }
            }
        } catch {
            return .end(error)
        }
    }

    /// Whether the intake may owe the state a success of `pool` (see ``IntakeDebt``): only a pool
    /// the configuration does not list, whose tasks the state does not count.
    @inlinable
    @inline(__always)
    func owesSuccesses(of pool: Int) -> Bool {
        pool >= configuration.poolLimits.count
    }

    /// The holder of the intake owes the state one more success of a detached attempt; it
    /// settles at once if the state waits for a slot (see ``IntakeDebt``).
    @inlinable
    @inline(__always)
    func owe<I>(_ cursor: IntakeCursor<I>) {
        cursor.owed += 1
        // Published for code under the lock that needs exact counts while the intake waits for
        // its source (it also sees what the attempt did).
        debt.owed.store(cursor.owed, ordering: .sequentiallyConsistent)
        if debt.wanted.load(ordering: .sequentiallyConsistent) { settleDebt(cursor) }
    }

    /// Records the intake's successes not yet recorded, taking the lock; nothing when none.
    @inlinable
    func settleDebt<I>(_ cursor: IntakeCursor<I>) {
        guard cursor.owed > 0 else { return }
        let owed = cursor.owed
        cursor.owed = 0
        var wakeups = Wakeups<Payload>()
        state.withLock { $0.settleIntakeDebt(owed, &wakeups) }
        wakeups.perform()
    }

    /// A runner: runs `first`, then, while it holds the intake, takes ready tasks or pulls new
    /// ones and runs them in turn; becomes a worker once the intake was taken back.
    @inlinable
    func run<I: AsyncIteratorProtocol>(_ first: Pulled, as runner: Runner<Pulled>, cursor: IntakeCursor<I>)
        async
    where I.Element == TaskItem<Payload> {
        var current = first
        while true {
            let next: Work?
            switch current {
            case .start(let work):
                let start = work.immediateTried ? work.startedAt : attemptStarting(work)
                let result = await execute(work)
                let decision = hooks.beforeRelease == nil ? nil : await decide(work, result, startedAt: start)
                guard case .holding = runner.executed() else {
                    // The intake went back to the spawner while this attempt was suspended.
                    return await finishAsWorker(work, result, startedAt: start, decision: decision)
                }
                next = finish(work, result, startedAt: start, takeNext: true, decision: decision)
            case .startDetached(let task, let sequence):
                let result: AttemptResult
                do {
                    try await executor.execute(
                        task, context: ExecutionContext(sequence: sequence, attempt: 1))
                    result = .success
                } catch {
                    result = .failure(error)
                }
                switch runner.executed() {
                case .holding:
                    if case .success = result, owesSuccesses(of: task.pool) {
                        // Recorded with the next admission; a ready task goes to a worker then.
                        owe(cursor)
                        next = nil
                    } else {
                        next = finishDetached(task, sequence: sequence, readySince: nil, result, takeNext: true)
                    }
                case .takenOver(let adopted):
                    // The spawner gave the target state when it took the intake back.
                    guard let adopted else { preconditionFailure("a detached attempt taken over without its target") }
                    let entry = Entry(task: task, sequence: sequence, attempts: 1, readySince: nil)
                    let work = Work(slot: adopted.slot, generation: adopted.generation, entry: entry)
                    return await finishAsWorker(work, result, startedAt: nil)
                }
            case .end:
                return
            }
            let pulled: Pulled
            if let next { pulled = .start(next) } else { pulled = await pullOne(cursor) }
            let isEnd: Bool
            if case .end = pulled { isEnd = true } else { isEnd = false }
            switch runner.proceed(with: pulled, detached: pulled.detachedTarget, isEnd: isEnd) {
            case .runInline:
                current = pulled
            case .handedBack:
                return
            case .finishIntake:
                guard case .end(let failure) = pulled else { return }
                finishIntake(failure)
                return
            }
        }
    }

    /// A runner that lost the intake while its attempt was suspended: it records the attempt and
    /// goes on as a worker until nothing is ready.
    @inlinable
    func finishAsWorker(_ work: Work, _ result: AttemptResult, startedAt: Duration?, decision: Decision? = nil)
        async
    {
        if let next = finish(work, result, startedAt: startedAt, takeNext: true, decision: decision) {
            await self.work(from: next, parkWhenIdle: false)
        }
    }

    /// The end of a detached attempt (inline, or in a runner that still holds the intake): a
    /// success only frees the slot; a failure gives the task target state first, like any failed
    /// attempt. With `takeNext`, returns the next ready task for the caller to run.
    @inlinable
    func finishDetached(
        _ task: TaskItem<Payload>, sequence: UInt64, readySince: Duration?, _ result: AttemptResult, takeNext: Bool
    ) -> Work? {
        guard case .success = result else {
            let work = state.withLock { $0.adoptDetached(task, sequence: sequence, readySince: readySince) }
            return finish(work, result, startedAt: nil, takeNext: takeNext)
        }
        var wakeups = Wakeups<Payload>()
        let next = state.withLock { $0.completeDetached(pool: task.pool, takeNext: takeNext, &wakeups) }
        wakeups.perform()
        return next
    }

    @inlinable
    func waitForRoom() async -> Bool {
        await withUnsafeContinuation { continuation in
            if let answer = state.withLock({ $0.intakeMayPull(continuation) }) {
                continuation.resume(returning: answer)
            }
        }
    }

    /// Runs a task of a target without state, without a task switch and without making state
    /// for the target unless the attempt fails or defers. A success of a pool without a cap
    /// takes no lock: the intake owes it to the state until its next admission (``IntakeDebt``).
    @inlinable
    func runDetached<I>(
        _ task: TaskItem<Payload>, sequence: UInt64, readySince: Duration?, cursor: IntakeCursor<I>
    ) {
        let context = ExecutionContext(sequence: sequence, attempt: 1)
        let outcome = executor.executeImmediately(task, context: context)
        if case .succeeded = outcome, owesSuccesses(of: task.pool) {
            owe(cursor)
            return
        }
        settleDebt(cursor)
        switch outcome {
        case .succeeded:
            _ = finishDetached(task, sequence: sequence, readySince: readySince, .success, takeNext: false)
        case .failed(let error):
            _ = finishDetached(task, sequence: sequence, readySince: readySince, .failure(error), takeNext: false)
        case .deferred:
            var wakeups = Wakeups<Payload>()
            state.withLock { state in
                let work = state.adoptDetached(task, sequence: sequence, readySince: readySince)
                state.handOff(work, startedAt: nil, &wakeups)
            }
            wakeups.perform()
        }
    }

    /// Runs a task the intake admitted to an idle target, without a task switch.
    @inlinable
    func runInline(_ work: Work) {
        let start = attemptStarting(work)
        switch executor.executeImmediately(work.entry.task, context: work.context) {
        case .succeeded:
            _ = finish(work, .success, startedAt: start, takeNext: false)
        case .failed(let error):
            _ = finish(work, .failure(error), startedAt: start, takeNext: false)
        case .deferred:
            var wakeups = Wakeups<Payload>()
            state.withLock { $0.handOff(work, startedAt: start, &wakeups) }
            wakeups.perform()
        }
    }

    // MARK: Workers

    @inlinable
    func runWorker() async {
        state.withLock { $0.workerStarted() }
        if let first = await park() {
            await work(from: first, parkWhenIdle: true)
        }
        state.withLock { $0.workerExited() }
    }

    /// Runs `first`, then whatever is ready next; parks when idle, or returns.
    @inlinable
    func work(from first: Work, parkWhenIdle: Bool) async {
        var next: Work? = first
        while let work = next {
            let start = work.immediateTried ? work.startedAt : attemptStarting(work)
            let result = await execute(work)
            let decision = hooks.beforeRelease == nil ? nil : await decide(work, result, startedAt: start)
            next = finish(work, result, startedAt: start, takeNext: true, decision: decision)
            if next == nil, parkWhenIdle { next = await park() }
        }
    }

    @inlinable
    func park() async -> Work? {
        await withUnsafeContinuation { continuation in
            var wakeups = Wakeups<Payload>()
            let (work, resumeNow) = state.withLock { $0.parkWorker(continuation, &wakeups) }
            wakeups.perform()
            if resumeNow { continuation.resume(returning: work) }
        }
    }

    /// Inlined into the loops that run attempts: no frame of its own per attempt.
    @inlinable
    @inline(__always)
    func execute(_ work: Work) async -> AttemptResult {
        let task = work.entry.task
        let context = work.context
        if executor.supportsImmediateExecution, !work.immediateTried {
            switch executor.executeImmediately(task, context: context) {
            case .succeeded: return .success
            case .failed(let error): return .failure(error)
            case .deferred: break
            }
        }
        guard let timeout = configuration.timeout else {
            do {
                try await executor.execute(task, context: context)
                return .success
            } catch {
                return .failure(error)
            }
        }
        return await execute(task, context: context, timeout: timeout)
    }

    @inlinable
    func execute(_ task: TaskItem<Payload>, context: ExecutionContext, timeout: Duration) async
        -> AttemptResult
    {
        let executor = self.executor
        let result = await withTimeout(timeout, clock: clock) { try await executor.execute(task, context: context) }
        switch result {
        case .success: return .success
        case .failure(let error): return .failure(error)
        }
    }

    /// The policy's decision on an attempt that ended, recorded by ``SchedulerHooks/beforeRelease``
    /// while the attempt still holds its slot and its target; nil without that hook.
    @usableFromInline
    struct Decision {
        /// nil: a success; `.some(nil)`: cut off by shutdown; otherwise the failure's verdict.
        @usableFromInline var verdict: Verdict??
        @usableFromInline var draw: Double

        @inlinable
        init(verdict: Verdict??, draw: Double) {
            self.verdict = verdict
            self.draw = draw
        }
    }

    @inlinable
    func decide(_ work: Work, _ result: AttemptResult, startedAt: Duration?) async -> Decision? {
        guard let beforeRelease = hooks.beforeRelease else { return nil }
        let now = stamp()
        var decision = Decision(verdict: nil, draw: 0)
        var error: (any Error)?
        var disposition = AttemptDisposition.succeeded
        if case .failure(let failure) = result {
            error = failure
            if configuration.retry.jitter > 0 { decision.draw = random() }
            let draw = decision.draw
            let verdict = state.withLock { $0.verdict(attempts: work.entry.attempts, error: failure, random: draw) }
            decision.verdict = .some(verdict)
            disposition = state.withLock { $0.disposition(of: verdict) }
        }
        await beforeRelease(
            AttemptRecord(
                task: work.entry.task, context: work.context, disposition: disposition, error: error,
                executionTime: startedAt.map { now - $0 } ?? .zero))
        return decision
    }

    @inlinable
    @inline(__always)
    func attemptStarting(_ work: Work) -> Duration? {
        if let started = hooks.attemptStarted {
            let now = stamp()
            let wait = work.entry.readySince.map { now - $0 } ?? .zero
            started(work.entry.task, work.context, wait)
            return now
        }
        return measuresExecution ? stamp() : nil
    }

    /// Records an attempt's end and, for a worker, takes its next task under the same lock.
    @inlinable
    func finish(
        _ work: Work, _ result: AttemptResult, startedAt: Duration?, takeNext: Bool, decision: Decision? = nil
    ) -> Work? {
        var now: Duration?
        var draw = 0.0
        if case .failure = result {
            now = stamp()
            if let decision {
                draw = decision.draw
            } else if configuration.retry.jitter > 0 {
                draw = random()
            }
        } else if startedAt != nil || tracksReadyTime {
            now = stamp()
        }
        var wakeups = Wakeups<Payload>()
        let decided = decision?.verdict
        let (disposition, next) = state.withLock { state in
            let disposition = state.complete(work, result: result, now: now, random: draw, decided: decided, &wakeups)
            let next = takeNext ? state.takeNext() : nil
            state.wakeWorkers(&wakeups)
            return (disposition, next)
        }
        wakeups.perform()
        if let finished = hooks.attemptFinished {
            var error: (any Error)?
            if case .failure(let failure) = result { error = failure }
            let elapsed = startedAt.flatMap { start in now.map { $0 - start } } ?? .zero
            finished(
                AttemptRecord(
                    task: work.entry.task, context: work.context, disposition: disposition, error: error,
                    executionTime: elapsed))
        }
        return next
    }

    // MARK: Timer

    @inlinable
    func runTimer() async {
        while !Task.isCancelled {
            var wakeups = Wakeups<Payload>()
            let now = stamp()
            let step = state.withLock { $0.fireTimers(now: now, &wakeups) }
            wakeups.perform()
            switch step {
            case .exit:
                return
            case .wait:
                await waitForEarlierDeadline(than: nil)
            case .sleep(let deadline):
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        try? await self.clock.sleep(until: self.epoch.advanced(by: deadline), tolerance: nil)
                    }
                    group.addTask { await self.waitForEarlierDeadline(than: deadline) }
                    _ = await group.next()
                    group.cancelAll()
                }
            }
        }
    }

    @inlinable
    func waitForEarlierDeadline(than deadline: Duration?) async {
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let parked = state.withLock { state in
                    Task.isCancelled ? false : state.parkTimer(continuation, until: deadline)
                }
                if !parked { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.takeTimerWaiter() }?.resume()
        }
    }

    // MARK: Operating a run

    /// Stops intake and starts no new task; running tasks get `gracePeriod` to finish, then
    /// are cancelled. Queued tasks are reported in ``RunSummary/unfinished``.
    /// A second call with a zero grace period cancels running tasks at once.
    @inlinable
    public func shutdown(gracePeriod: Duration) {
        var wakeups = Wakeups<Payload>()
        state.withLock { $0.beginShutdown(grace: gracePeriod, &wakeups) }
        wakeups.perform()
    }

    /// Stops a target: its running task finishes, nothing more of it starts until ``release(_:)``.
    /// A target the scheduler holds nothing for is parked ahead: its tasks queue, parked, when
    /// they arrive.
    @discardableResult
    public func park(_ target: TargetID) -> TargetCommandResult {
        state.withLock { $0.park(target) }
    }

    /// Resumes a parked target; its head gets a fresh set of attempts.
    @discardableResult
    public func release(_ target: TargetID) -> TargetCommandResult {
        var wakeups = Wakeups<Payload>()
        let result = state.withLock { $0.release(target, &wakeups) }
        wakeups.perform()
        return result
    }

    /// Sends every queued task of a parked target to the dead-letter hook (with a ``DrainedError``)
    /// and resumes the target for tasks that arrive later.
    @discardableResult
    public func drain(_ target: TargetID) -> TargetCommandResult {
        var wakeups = Wakeups<Payload>()
        let (result, drained) = state.withLock { $0.drain(target, &wakeups) }
        wakeups.perform()
        if let finished = hooks.attemptFinished {
            for entry in drained {
                finished(
                    AttemptRecord(
                        task: entry.task, context: ExecutionContext(sequence: entry.sequence, attempt: entry.attempts),
                        disposition: .deadLettered, error: DrainedError(), executionTime: .zero))
            }
        }
        return result
    }

    /// The gauges of SEMANTICS.md item 12, read under the lock.
    public func snapshot() -> SchedulerSnapshot {
        let now = tracksReadyTime ? stamp() : nil
        return state.withLock { $0.snapshot(now: now) }
    }
}

extension Scheduler where C == ContinuousClock {
    @inlinable
    public convenience init(
        executor: Executor,
        configuration: SchedulerConfiguration = SchedulerConfiguration(),
        hooks: SchedulerHooks<Payload> = SchedulerHooks()
    ) {
        self.init(executor: executor, configuration: configuration, clock: ContinuousClock(), hooks: hooks)
    }
}

/// Runs every task of `tasks` with `executor`: at most `maxConcurrency` at once (`nil`: no cap),
/// never two of one target at once, each target's tasks started in arrival order.
///
/// The Swift form of the original design's `run(executor, queue, maxThreads?)`. For retries,
/// timeouts, hooks and operator commands, create a ``Scheduler``.
@inlinable
public func run<E: TaskItemExecutor, S: AsyncSequence & Sendable>(
    executor: E,
    tasks: S,
    maxConcurrency: Int?,
    configuration: SchedulerConfiguration = SchedulerConfiguration()
) async -> RunSummary<E.Payload> where S.Element == TaskItem<E.Payload> {
    var configuration = configuration
    configuration.maxConcurrency = maxConcurrency
    return await Scheduler(executor: executor, configuration: configuration).run(tasks)
}

/// The input's iterator and the intake's room flag, used by one holder of the intake at a time:
/// the intake task, or a runner it spawned. Hand-overs go through a ``Runner``'s lock.
///
/// Only the holder of the intake touches it, one at a time (the hand-over orders them), so its
/// accesses are not checked at run time: a dynamic exclusivity check per task costs more than the
/// rest of the bookkeeping it guards.
@usableFromInline
final class IntakeCursor<I: AsyncIteratorProtocol>: @unchecked Sendable {
    @usableFromInline
    @exclusivity(unchecked) var iterator: I
    @usableFromInline
    @exclusivity(unchecked) var hasRoom = true
    /// Successes of detached attempts the intake has not recorded in the state yet.
    @usableFromInline
    @exclusivity(unchecked) var owed = 0

    @inlinable
    init(_ iterator: I) { self.iterator = iterator }
}

/// The target state the intake made for a detached attempt of a runner it took the intake from.
@usableFromInline
struct AdoptedTarget: Sendable {
    @usableFromInline
    var slot: Int32
    @usableFromInline
    var generation: UInt32

    @inlinable
    init(slot: Int32, generation: UInt32) {
        self.slot = slot
        self.generation = generation
    }
}

/// The hand-over of the intake between the intake task and a runner it spawned.
///
/// The runner's own steps (an attempt ends, the next one starts) are single compare-and-swaps on
/// `word`; the spawner claims the word under `lock`, and a runner that finds it claimed takes
/// the lock to read what the spawner left.
@usableFromInline
final class Runner<Handed: Sendable>: @unchecked Sendable {
    @usableFromInline
    enum Regained: Sendable {
        /// The runner was executing: the intake is the spawner's again.
        case intake
        /// The runner was pulling: it handed over what it pulled.
        case handed(Handed)
        /// The runner ended the input.
        case finished
    }

    @usableFromInline
    enum Executed: Sendable {
        /// The runner still holds the intake.
        case holding
        /// The spawner took the intake back, adopting the detached attempt's target if any.
        case takenOver(AdoptedTarget?)
    }

    @usableFromInline
    enum Next: Sendable {
        case runInline, handedBack, finishIntake
    }

    /// What the spawner left when it claimed the word.
    @usableFromInline
    enum Claim: Sendable {
        case none
        case takenOver(AdoptedTarget?)
        case waiting(UnsafeContinuation<Regained, Never>)
        case handedBack
    }

    @inlinable
    static var executing: UInt8 { 0 }
    @inlinable
    static var pulling: UInt8 { 1 }
    @inlinable
    static var claimed: UInt8 { 2 }
    @inlinable
    static var done: UInt8 { 3 }

    @usableFromInline
    let word = Atomic<UInt8>(0)
    /// The target of the attempt being run when it runs without target state. Written by the
    /// runner before it publishes `executing`; read by the spawner after it claims that state.
    @usableFromInline
    @exclusivity(unchecked) var detached: TargetID?
    @usableFromInline
    let lock = StateLock(Claim.none)

    @inlinable
    init(detached: TargetID?) { self.detached = detached }

    /// The spawner, back from `addImmediateTask`: takes the intake back at once if the runner is
    /// executing, or waits for what the runner is pulling. A detached attempt's target gets its
    /// state from `adopt` before the spawner admits anything else, so a later task of that target
    /// queues behind it.
    @inlinable
    func regain(adopting adopt: (TargetID) -> AdoptedTarget) async -> Regained {
        await withUnsafeContinuation { continuation in
            let now = lock.withLock { claim -> Regained? in
                var current = word.load(ordering: .acquiring)
                while true {
                    switch current {
                    case Self.executing, Self.pulling:
                        let (exchanged, original) = word.compareExchange(
                            expected: current, desired: Self.claimed, ordering: .acquiringAndReleasing)
                        guard exchanged else {
                            current = original
                            continue
                        }
                        if current == Self.pulling {
                            claim = .waiting(continuation)
                            return nil
                        }
                        claim = .takenOver(detached.map(adopt))
                        return .intake
                    default:
                        return .finished
                    }
                }
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    /// The runner, after an attempt: whether it still holds the intake.
    @inlinable
    func executed() -> Executed {
        if word.compareExchange(expected: Self.executing, desired: Self.pulling, ordering: .acquiringAndReleasing)
            .exchanged
        {
            return .holding
        }
        return lock.withLock { claim in
            guard case .takenOver(let adopted) = claim else {
                preconditionFailure("a runner finished an attempt it was not running")
            }
            return .takenOver(adopted)
        }
    }

    /// The runner, with a task to start or the end of the input: goes on if it still holds the
    /// intake, or hands `pulled` to the waiting spawner.
    @inlinable
    func proceed(with pulled: Handed, detached: TargetID?, isEnd: Bool) -> Next {
        self.detached = detached
        let desired = isEnd ? Self.done : Self.executing
        if word.compareExchange(expected: Self.pulling, desired: desired, ordering: .acquiringAndReleasing).exchanged {
            return isEnd ? .finishIntake : .runInline
        }
        let waiting = lock.withLock { claim in
            guard case .waiting(let continuation) = claim else {
                preconditionFailure("the intake claimed a pulling runner without waiting")
            }
            claim = .handedBack
            return continuation
        }
        waiting.resume(returning: .handed(pulled))
        return .handedBack
    }
}

/// Runs `body` against a deadline: past `timeout` on `clock` it is cancelled and the result is a
/// ``TaskTimeoutError``. The call still waits for `body` to return, so a timed-out attempt keeps
/// its target busy and its slot held until it does.
@inlinable
public func withTimeout<C: Clock>(
    _ timeout: Duration, clock: C, _ body: @escaping @Sendable () async throws -> Void
) async -> Result<Void, any Error> where C.Duration == Duration {
    await withTaskGroup(of: Result<Void, any Error>?.self) { group in
        group.addTask {
            do {
                try await body()
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        group.addTask {
            do {
                try await clock.sleep(for: timeout)
                return .failure(TaskTimeoutError(timeout: timeout))
            } catch {
                return nil  // cancelled: the body finished first
            }
        }
        // The first answer wins; the group waits for the body either way.
        var outcome: Result<Void, any Error>?
        while outcome == nil, let next = await group.next() {
            outcome = next
            group.cancelAll()
        }
        return outcome ?? .failure(CancellationError())
    }
}
