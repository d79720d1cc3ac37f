import Foundation
import TaskHostConfig
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

/// The durable queue as the pipeline's store: sources append in group commits (with their
/// checkpoints), the feed hands rows on by target, each attempt is leased in the journal before it
/// runs and its outcome committed before its target moves on, and a restart puts back what a dead
/// host was running.
extension DurableRun: PipelineStore {
    // MARK: Sources

    func submit(_ tasks: [TaskItem<PipelineTask>], refused: [NewTask], checkpoint: Checkpoint?) -> AppendTicket {
        if hasFailed { return .done(false) }
        var rows = refused
        rows.reserveCapacity(tasks.count + refused.count)
        for item in tasks {
            rows.append(
                NewTask(
                    source: item.payload.source, seq: item.payload.seq, taskId: item.id, target: item.targetId,
                    executor: executorNames[item.payload.executor], priority: item.priority,
                    payload: item.payload.payload, raw: item.payload.raw, batch: item.payload.batch?.name))
        }
        let ticket = CommitTicket()
        let window = Int64((queue.settings.dedupWindow.seconds * 1000).rounded())
        let offset = refused.count
        nonisolated(unsafe) var duplicates: [Int: ExistingTask] = [:]
        queue.submit(
            { db in
                let now = unixMilliseconds()
                duplicates = try DurableQueue.insert(rows, into: db, now: now, dedupAfter: now - window)
                if let checkpoint { try DurableQueue.save(checkpoint, into: db) }
            },
            refusable: true,
            done: { [self] error in
                if let error, error.isFull {
                    ticket.finish(.full)
                    return
                }
                if let error { fail(error) } else if tasks.count > duplicates.count { arrived() }
                ticket.finish(
                    error == nil
                        ? .committed(Dictionary(uniqueKeysWithValues: duplicates.map { ($0.key - offset, $0.value) }))
                        : .failed)
            })
        return .commit(ticket)
    }

    var isDurable: Bool { true }

    var failureMessage: String? { failure.withLock { $0?.message } }

    func start(source: String, file: String?, pipeline: Pipeline) async -> (
        seq: UInt64, offset: Int64, complete: Bool, rotated: String?
    ) {
        await pipeline.resumePoint(source, file: file, run: self)
    }

    func openBatch(_ name: String, of source: SourceConfig, pipeline: Pipeline) async -> (
        tracker: BatchTracker, offset: Int64, complete: Bool
    ) {
        let key = source.name + "/" + name
        let resumed = trackers.withLock { $0[key] }
        let tracker = resumed ?? pipeline.spoolTracker(source, name: name, run: self)
        let point = await pipeline.resumePoint(source.name, file: name, run: self)
        if resumed == nil { trackers.withLock { $0[key] = tracker } }
        return (tracker, point.offset, point.complete)
    }

    func dropBatch(_ name: String, of source: String) {
        trackers.withLock { _ = $0.removeValue(forKey: source + "/" + name) }
    }

    // MARK: The scheduler's side

    func open(for pipeline: Pipeline) async throws(QueueError) {
        let results = pipeline.results
        let deadLetters = pipeline.deadLetters
        // A line about a task is written before the task's new state is committed.
        queue.setBeforeCommit {
            results?.flush()
            deadLetters?.flush()
        }
        let reclaimed = try recover()
        if reclaimed > 0 {
            logger.warning(
                "tasks were running when the previous host stopped: they go back to the head of their targets",
                metadata: ["tasks": .stringConvertible(reclaimed)])
        }
        try pipeline.resumeSpools(self)
    }

    func feed(for pipeline: Pipeline) -> QueueFeed {
        QueueFeed(run: self, makeTask: { [self] stored in pipeline.makeTask(stored, run: self) })
    }

    func hooks(for pipeline: Pipeline) -> SchedulerHooks<PipelineTask> { pipeline.durableHooks(self) }

    /// A task during which the host died too often is not run again; one during which it died at
    /// all (a suspect) runs alone, asynchronously; an attempt that does not finish inline shows as
    /// running in the queue.
    func executeImmediately(_ task: TaskItem<PipelineTask>, context: ExecutionContext, router: PipelineExecutor)
        -> ImmediateOutcome
    {
        guard let record = task.payload.durable else { return router.executeImmediately(task, context: context) }
        let crashes = self.crashes(of: record)
        if crashes >= HostCrashes.limit {
            // Not run again, so that a task that crashes the host cannot do it forever.
            return .failed(NonRetryableError(HostCrashes(crashes: crashes)))
        }
        // A suspect waits for the gate: asynchronously.
        if crashes > 0 { return .deferred }
        let outcome = router.executeImmediately(task, context: context)
        if case .deferred = outcome { markRunning(record, attempt: context.attempt) }
        return outcome
    }

    func execute(_ task: TaskItem<PipelineTask>, context: ExecutionContext, router: PipelineExecutor) async throws {
        guard let record = task.payload.durable, crashes(of: record) > 0 else {
            return try await router.execute(task, context: context)
        }
        if crashes(of: record) >= HostCrashes.limit {
            throw NonRetryableError(HostCrashes(crashes: crashes(of: record)))
        }
        try await suspects.enter()
        // Left once the attempt's outcome is committed (``record(_:of:attempt:target:)``).
        record.holdsGate.store(true, ordering: .relaxed)
        // Journaled once it really runs: a crash while it waited for the gate is not its own.
        leased(record, attempt: context.attempt)
        switch router.executeImmediately(task, context: context) {
        case .succeeded: return
        case .failed(let error): throw error
        case .deferred: markRunning(record, attempt: context.attempt)
        }
        try await router.execute(task, context: context)
    }

    func ready(for pipeline: Pipeline, scheduler: Scheduler<RunExecutor<DurableRun>, ContinuousClock>) async {
        await pipeline.applyCommands(self, scheduler: scheduler)
    }

    func services(for pipeline: Pipeline, scheduler: Scheduler<RunExecutor<DurableRun>, ContinuousClock>)
        -> [(name: String, body: @Sendable () async -> Void)]
    {
        let wakeups = pipeline.commandWakeups
        return [
            // Operator commands (`taskhost targets`) and tasks enqueued by another process: the
            // executable forwards SIGUSR1 (``Pipeline/commandsArrived()``).
            (
                "command listener",
                { [self] in
                    await untilShutdown {
                        for await _ in wakeups.stream { await pipeline.applyCommands(self, scheduler: scheduler) }
                    }
                }
            ),
            // Finished tasks are deleted after the retention.
            (
                "compaction",
                { [self] in
                    let retain = queue.settings.retainFinished
                    let period = max(Duration.seconds(1), min(retain / 2, .seconds(60)))
                    let health = pipeline.health
                    await untilShutdown {
                        // Every period; every 200 ms while the queue is full (intake waits for room).
                        var waited = Duration.zero
                        while (try? await Task.sleep(for: .milliseconds(200))) != nil {
                            waited += .milliseconds(200)
                            guard waited >= period || health.queueFull else { continue }
                            waited = .zero
                            await pipeline.compact(self)
                        }
                    }
                }
            ),
        ]
    }

    func depth() async -> QueueDepth? {
        try? await queue.perform { db in
            let counts = try db.countsByState()
            let parked = try db.countQueuedOfParkedTargets()
            let oldest = try db.oldestQueued()?.enqueuedAt
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            return QueueDepth(
                byState: [
                    "queued": (counts[.queued] ?? 0) - parked, "parked": parked, "running": counts[.running] ?? 0,
                    "succeeded": counts[.succeeded] ?? 0, "dead": counts[.dead] ?? 0,
                ], oldestQueuedAge: oldest.map { Double(max(0, now - $0)) / 1000 })
        }
    }

    // MARK: The end

    /// Unfinished tasks stay queued for the next run, with their attempt counts: those the
    /// scheduler held, those of parked targets, those not read yet.
    func close(_ summary: RunSummary<PipelineTask>, pipeline: Pipeline, into out: inout Pipeline.Summary) async {
        out.leftQueued = summary.unfinished.count
        out.parked = summary.parked
        if !hasFailed {
            await pipeline.compact(self)
            if let left = try? await queue.perform({ db in try db.countOpen() }) { out.leftQueued = left }
            queue.checkpointWAL()
        }
        out.queueError = failure.withLock { $0?.description }
        // The references a run's parts hold to the store are let go (batches left open).
        trackers.withLock { $0.removeAll() }
    }
}
