import AsyncAlgorithms
import Dispatch
import Foundation
import Logging
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostStore

/// Where one source's tasks go: straight to the scheduler (`queue: memory`), or committed to the
/// durable queue first, in batches, with the source's checkpoint in the same commit.
final class Intake: Sendable {
    let channel: AsyncChannel<[TaskItem<PipelineTask>]>
    let durable: DurableRun?
    let executorNames: [String]

    struct State {
        var items: [TaskItem<PipelineTask>] = []
        var rows: [NewTask] = []
        var checkpoint: Checkpoint?
        /// The last batch handed to the queue: a flush that finds nothing to hand on waits for it,
        /// since it may hold the caller's rows (another caller took them).
        var lastBatch: CommitTicket?
    }

    /// The commit of one batch, awaited by every caller whose rows it holds.
    final class CommitTicket: Sendable {
        let state = Mutex<(result: Bool?, waiters: [CheckedContinuation<Bool, Never>])>((nil, []))

        func finish(_ ok: Bool) {
            let waiters = state.withLock { state in
                state.result = ok
                defer { state.waiters.removeAll() }
                return state.waiters
            }
            for waiter in waiters { waiter.resume(returning: ok) }
        }

        func wait() async -> Bool {
            await withCheckedContinuation { continuation in
                let result = state.withLock { state -> Bool? in
                    if state.result == nil { state.waiters.append(continuation) }
                    return state.result
                }
                if let result { continuation.resume(returning: result) }
            }
        }
    }

    let state = Mutex(State())

    init(channel: AsyncChannel<[TaskItem<PipelineTask>]>, durable: DurableRun?, executorNames: [String]) {
        self.channel = channel
        self.durable = durable
        self.executorNames = executorNames
    }

    /// Adds a task; true when the batch is full and should be flushed.
    func add(_ item: TaskItem<PipelineTask>, checkpoint: Checkpoint?) -> Bool {
        state.withLock { state in
            if let checkpoint { state.checkpoint = checkpoint }
            guard durable != nil else {
                state.items.append(item)
                return state.items.count >= 256
            }
            state.rows.append(
                NewTask(
                    source: item.payload.source, seq: item.payload.seq, taskId: item.id, target: item.targetId,
                    executor: executorNames[item.payload.executor], priority: item.priority,
                    payload: item.payload.payload, raw: item.payload.raw, batch: item.payload.batch?.name))
            return state.rows.count >= 256
        }
    }

    /// Adds an input that could not be read: kept in the durable queue as a dead letter.
    func reject(_ row: NewTask, checkpoint: Checkpoint?) {
        state.withLock { state in
            if let checkpoint { state.checkpoint = checkpoint }
            if durable != nil { state.rows.append(row) }
        }
    }

    func mark(_ checkpoint: Checkpoint) { state.withLock { $0.checkpoint = checkpoint } }

    /// Hands the batch on. On the durable queue it returns once everything this source added
    /// before the call is committed; false when the queue failed (the run is stopping).
    @discardableResult
    func flush() async -> Bool {
        guard let durable else {
            let items = state.withLock { state in
                defer { state.items.removeAll(keepingCapacity: true) }
                return state.items
            }
            if !items.isEmpty { await channel.send(items) }
            return true
        }
        if durable.failure.withLock({ $0 != nil }) { return false }
        // Taken and submitted under the lock: batches reach the queue in the order they were read.
        let ticket = state.withLock { state -> CommitTicket? in
            guard !state.rows.isEmpty || state.checkpoint != nil else {
                return state.lastBatch
            }
            let rows = state.rows
            let checkpoint = state.checkpoint
            state.rows.removeAll(keepingCapacity: true)
            state.checkpoint = nil
            let ticket = CommitTicket()
            state.lastBatch = ticket
            durable.queue.submit(
                { db in
                    try DurableQueue.insert(rows, into: db, now: unixMilliseconds())
                    if let checkpoint { try DurableQueue.save(checkpoint, into: db) }
                },
                done: { error in
                    if let error { durable.fail(error) } else if !rows.isEmpty { durable.arrived() }
                    ticket.finish(error == nil)
                })
            return ticket
        }
        guard let ticket else { return true }
        return await ticket.wait()
    }
}

/// The poison-task guard: a task during which the host died ``limit`` times (a plugin that
/// segfaults on its payload) is dead-lettered instead of being run again, so that it cannot crash
/// the host forever. Only deaths count: a graceful stop puts the tasks it cut off back as they
/// were. Every task running when the host dies is counted, so tasks counted once (suspects) run
/// one at a time afterwards (``SuspectGate``): a task that only sat beside the culprit is not
/// counted with it again.
struct HostCrashes: Error, CustomStringConvertible {
    static let limit = 3
    var crashes: Int
    var description: String {
        "the host died during \(crashes) of its attempts (a crash in the executor?); "
            + "not run again, so that it cannot crash the host again"
    }
}

/// The pipeline's executor: the router itself in memory, or the durable path, which records
/// each attempt in the queue before its slot and target are released.
struct RunExecutor: TaskItemExecutor {
    typealias Payload = PipelineTask
    let pipeline: Pipeline
    let durable: DurableRun?

    var supportsImmediateExecution: Bool { durable == nil }

    func executeImmediately(_ task: TaskItem<PipelineTask>, context: ExecutionContext) -> ImmediateOutcome {
        pipeline.router.executeImmediately(task, context: context)
    }

    func execute(_ task: TaskItem<PipelineTask>, context: ExecutionContext) async throws {
        if let durable, let record = task.payload.durable {
            try await pipeline.executeDurably(task, record: record, context: context, run: durable)
        } else {
            try await pipeline.router.execute(task, context: context)
        }
    }
}

extension Pipeline {
    /// The scheduler's settings for a durable run: the durable path decides retries (it counts
    /// attempts across restarts and persists each backoff deadline) and applies the timeout.
    func durableSchedulerConfiguration() -> SchedulerConfiguration {
        var configuration = SchedulerConfiguration(
            maxConcurrency: config.maxConcurrency, bufferSize: config.bufferSize,
            retry: RetryPolicy(maxAttempts: .max, backoff: .fixed(.zero), maxDelay: .seconds(10 * 365 * 86400)),
            timeout: nil, onExhausted: config.onExhausted)
        configuration.poolLimits = [nil] + config.executors.map(\.maxConcurrency)
        return configuration
    }

    /// One attempt of a durable task. An attempt that does not finish inline is leased in the
    /// queue when it defers; every outcome (and its result line) is committed before this
    /// returns, so a task whose slot was given to another is never run again after a crash.
    func executeDurably(
        _ task: TaskItem<PipelineTask>, record: DurableRecord, context: ExecutionContext, run: DurableRun
    ) async throws {
        let row = record.row
        if let failure = run.failure.withLock({ $0 }) {
            // The queue failed (a full disk): nothing more runs, the task stays queued.
            throw NonRetryableError(failure)
        }
        let now = unixMilliseconds()
        if record.notBefore > now {
            throw RetryAfterError(after: .milliseconds(record.notBefore - now), NotDueYet())
        }
        if run.resetAttempts.withLock({ $0.remove(row) != nil }) {
            record.attempts.store(0, ordering: .relaxed)
            record.crashes.store(0, ordering: .relaxed)
        }
        var attempt = record.attempts.load(ordering: .relaxed)
        var failure: (any Error)?
        let crashes = record.crashes.load(ordering: .relaxed)
        if crashes >= HostCrashes.limit {
            // Not run again, so that a task that crashes the host cannot do it forever.
            failure = NonRetryableError(HostCrashes(crashes: crashes))
        } else {
            do {
                if crashes > 0 { try await run.suspects.enter() }
                defer { if crashes > 0 { run.suspects.leave() } }
                attempt = record.attempts.add(1, ordering: .relaxed).newValue
                let made = attempt
                let lease = {
                    // Leased (not waited for): the queue shows the task running, and a crash before
                    // its end counts the attempt.
                    run.write { db in
                        try db.run(
                            "UPDATE tasks SET state = 1, attempts = ?, started_at = ? WHERE id = ?",
                            [.int(made), .integer(now), .integer(row)])
                    }
                }
                // An attempt that finishes inline is only journaled (no SQLite write): a crash
                // inside it is counted by the next host from the journal.
                let slot = run.queue.running?.begin(row: row, attempt: attempt)
                if slot == nil { lease() }
                defer { if let slot { run.queue.running?.end(slot) } }
                try await runAttempt(
                    task,
                    context: ExecutionContext(sequence: context.sequence, attempt: attempt, timeout: config.timeout)
                ) {
                    if slot != nil { lease() }
                }
            } catch {
                failure = error
            }
        }
        if failure != nil, run.stopping.load(ordering: .acquiring), Task.isCancelled || failure is CancellationError {
            // Cut off by shutdown: back to the head of its target, with its attempt count.
            run.write { db in try db.run("UPDATE tasks SET state = 0 WHERE id = ?", [.integer(row)]) }
            throw failure!
        }
        let log = task.payload.log.snapshot
        do {
            guard let failure else {
                writeResult(task, status: "succeeded", attempts: attempt, error: nil)
                try await run.queue.perform { db in
                    try db.run(
                        "UPDATE tasks SET state = 2, attempts = ?, finished_at = ?, output = ?, error = NULL WHERE id = ?",
                        [.int(attempt), .integer(unixMilliseconds()), .optional(log.output), .integer(row)])
                }
                return
            }
            let message = "\(failure)"
            let retry = config.retry
            if !(failure is NonRetryableError), attempt < retry.maxAttempts {
                let delay =
                    (failure as? RetryAfterError).map { min($0.delay, retry.maxDelay) }
                    ?? retry.delay(beforeRetry: attempt, random: Double.random(in: 0..<1))
                let notBefore = unixMilliseconds() + Int64(delay.seconds * 1000)
                try await run.queue.perform { db in
                    try db.run(
                        "UPDATE tasks SET state = 0, attempts = ?, not_before = ?, error = ? WHERE id = ?",
                        [.int(attempt), .integer(notBefore), .text(message), .integer(row)])
                }
                throw RetryAfterError(after: delay, failure)
            }
            if config.onExhausted == .park {
                run.parked(task.targetId)
                try await run.queue.perform { db in
                    try db.run(
                        "UPDATE tasks SET state = 0, attempts = ?, error = ? WHERE id = ?",
                        [.int(attempt), .text(message), .integer(row)])
                    try DurableQueue.setParked(task.targetId, true, reason: message, in: db)
                }
                throw NonRetryableError(failure)
            }
            writeResult(task, status: "deadLettered", attempts: attempt, error: message)
            writeDeadLetter(task, error: message, attempts: attempt)
            try await run.queue.perform { db in
                try db.run(
                    "UPDATE tasks SET state = 3, attempts = ?, finished_at = ?, error = ? WHERE id = ?",
                    [.int(attempt), .integer(unixMilliseconds()), .text(message), .integer(row)])
            }
            throw NonRetryableError(failure)
        } catch let error as QueueError {
            run.fail(error)
            throw NonRetryableError(error)
        }
    }

    /// Runs one attempt through the router, inline when the executor can, under the timeout.
    private func runAttempt(
        _ task: TaskItem<PipelineTask>, context: ExecutionContext, deferred: () -> Void
    ) async throws {
        switch router.executeImmediately(task, context: context) {
        case .succeeded: return
        case .failed(let error): throw error
        case .deferred: deferred()
        }
        guard let timeout = config.timeout else {
            return try await router.execute(task, context: context)
        }
        let router = self.router
        let outcome = await withTimeout(timeout, clock: ContinuousClock()) {
            try await router.execute(task, context: context)
        }
        try outcome.get()
    }

    /// A queued row as the scheduler's task; nil (and a dead letter) when its executor is gone.
    func makeTask(_ stored: StoredTask, run: DurableRun) -> TaskItem<PipelineTask>? {
        guard let index = run.executorIndex[stored.executor] else {
            let error = "its executor '\(stored.executor)' is not in the configuration any more"
            writeDeadLetter(stored, error: error)
            counters.finished.add(1, ordering: .relaxed)
            stored.batch.flatMap { name in run.trackers.withLock { $0[stored.source + "/" + name] } }?.final(
                failed: true)
            run.write { db in
                try db.run(
                    "UPDATE tasks SET state = 3, finished_at = ?, error = ? WHERE id = ?",
                    [.integer(unixMilliseconds()), .text(error), .integer(stored.row)])
            }
            return nil
        }
        let tracker = stored.batch.flatMap { name in run.trackers.withLock { $0[stored.source + "/" + name] } }
        return TaskItem(
            targetId: stored.target,
            payload: PipelineTask(
                source: stored.source, seq: stored.seq, executor: index, payload: stored.payload, raw: stored.raw,
                log: AttemptLog(), batch: tracker,
                durable: DurableRecord(
                    row: stored.row, attempts: stored.attempts, notBefore: stored.notBefore, crashes: stored.crashes)),
            priority: stored.priority, id: stored.taskId, pool: index + 1)
    }

    /// A dead letter for a row that never reached the scheduler (drained, or its executor gone).
    func writeDeadLetter(_ stored: StoredTask, error: String) {
        deadLetters?.write(bytes: deadLetterLine(stored, error: error))
    }

    /// Batch files of spool sources that a previous run read (whole or in part): their trackers,
    /// with the tasks still queued, registered before the feed starts.
    func resumeSpools(_ run: DurableRun) throws(QueueError) {
        for source in config.sources where source.kind == .directory {
            let folder = source.path!
            let entries = try run.queue.transaction { db -> [(String, Int, Int)] in
                let statement = try db.statement("SELECT file FROM checkpoints WHERE source = ?")
                try statement.bind([.text(source.name)])
                var files: [String] = []
                while try statement.step() { files.append(statement.text(0) ?? "") }
                return try files.map { file in
                    let pending = try db.integer(
                        "SELECT count(*) FROM tasks WHERE source = ? AND batch = ? AND state IN (0, 1)",
                        [.text(source.name), .text(file)])
                    let failed = try db.integer(
                        "SELECT count(*) FROM tasks WHERE source = ? AND batch = ? AND state = 3",
                        [.text(source.name), .text(file)])
                    return (file, Int(pending ?? 0), Int(failed ?? 0))
                }
            }
            for (name, pending, failed) in entries where FileManager.default.fileExists(atPath: folder + "/" + name) {
                let tracker = spoolTracker(source, name: name, run: run)
                tracker.resume(pending: pending, failed: failed)
                run.trackers.withLock { $0[source.name + "/" + name] = tracker }
            }
        }
    }

    /// The tracker of one batch file: moves it to done/ or failed/ once its tasks are final.
    func spoolTracker(_ source: SourceConfig, name: String, run: DurableRun?) -> BatchTracker {
        let folder = source.path!
        let path = folder + "/" + name
        let logger = self.logger
        return BatchTracker(name: name) { failed in
            let manager = FileManager.default
            let target = folder + (failed == 0 ? "/done/" : "/failed/") + name
            try? manager.removeItem(atPath: target)
            do {
                try manager.moveItem(atPath: path, toPath: target)
            } catch {
                // Its checkpoint stays: the next run finds the batch complete and tries again.
                logger.error("cannot move batch \(path): \(error)")
                return
            }
            if let run {
                run.trackers.withLock { _ = $0.removeValue(forKey: source.name + "/" + name) }
                run.write { db in
                    try db.run(
                        "DELETE FROM checkpoints WHERE source = ? AND file = ?", [.text(source.name), .text(name)])
                }
            }
        }
    }

    /// Where a source resumes: its next sequence number, and for a file the offset of the
    /// first line not yet committed (0 when the file was replaced or truncated).
    func resumePoint(_ source: String, file: String?, run: DurableRun) async -> (
        seq: UInt64, offset: Int64, complete: Bool
    ) {
        do {
            let (seq, checkpoint) = try await run.queue.perform { db -> (Int64?, Checkpoint?) in
                let seq = try db.integer("SELECT next_seq FROM sources WHERE name = ?", [.text(source)])
                guard let file else { return (seq, nil) }
                let statement = try db.statement(
                    "SELECT device, inode, offset, complete FROM checkpoints WHERE source = ? AND file = ?")
                defer { statement.reset() }
                try statement.bind([.text(source), .text(file)])
                guard try statement.step() else { return (seq, nil) }
                return (
                    seq,
                    Checkpoint(
                        source: source, file: file, device: statement.int(0), inode: statement.int(1),
                        offset: statement.int(2), complete: statement.int(3) != 0)
                )
            }
            let next = UInt64(max(1, seq ?? 1))
            guard let checkpoint, let path = file else { return (next, 0, false) }
            let full = config.sources.first { $0.name == source }.flatMap { $0.kind == .directory ? $0.path : nil }
            let identity = fileIdentity(full.map { $0 + "/" + path } ?? path)
            guard let identity, identity.device == checkpoint.device, identity.inode == checkpoint.inode,
                identity.size >= checkpoint.offset
            else {
                logger.warning(
                    "the file was replaced or truncated since it was read: reading it from the start",
                    metadata: ["source": "\(source)", "file": "\(path)"])
                return (next, 0, false)
            }
            if checkpoint.offset > 0, checkpoint.offset == identity.size, !checkpoint.complete {
                logger.info(
                    "the file was read to its end by an earlier run: only lines appended since are read (remove the queue file to read it again)",
                    metadata: ["source": "\(source)", "file": "\(path)", "queue": "\(run.queue.path)"])
            } else if checkpoint.offset > 0 {
                logger.info(
                    "resuming after the last committed line",
                    metadata: [
                        "source": "\(source)", "file": "\(path)", "offset": "\(checkpoint.offset)",
                        "size": "\(identity.size)",
                    ])
            }
            return (next, checkpoint.offset, checkpoint.complete)
        } catch {
            run.fail(error)
            return (1, 0, true)
        }
    }

    // MARK: Operator commands on a running host

    /// Applies the commands `taskhost targets` left in the queue (it signals SIGUSR1).
    func applyCommands(_ run: DurableRun, scheduler: Scheduler<RunExecutor, ContinuousClock>) async {
        do {
            try await run.queue.perform { db in
                let statement = try db.statement(
                    "SELECT id, verb, target_kind, target FROM commands WHERE applied = 0 ORDER BY id")
                var commands: [(Int64, String, TargetID)] = []
                while try statement.step() {
                    if let target = TargetID(kind: statement.int(2), text: statement.text(3)) {
                        commands.append((statement.int(0), statement.text(1) ?? "", target))
                    }
                }
                for (id, verb, target) in commands {
                    let result = try self.apply(verb, target, run: run, scheduler: scheduler, db: db)
                    self.logger.info(
                        "operator command", metadata: ["command": "\(verb) \(target)", "result": "\(result)"])
                    try db.run(
                        "UPDATE commands SET applied = 1, result = ? WHERE id = ?", [.text(result), .integer(id)])
                }
            }
        } catch {
            run.fail(error)
        }
        run.arrived()
    }

    private func apply(
        _ verb: String, _ target: TargetID, run: DurableRun, scheduler: Scheduler<RunExecutor, ContinuousClock>,
        db: SQLiteDatabase
    ) throws -> String {
        let isParked = try QueueTools.isParked(target, in: db)
        switch verb {
        case "park":
            try DurableQueue.setParked(target, true, reason: "parked by operator", in: db)
            run.parked(target)
            scheduler.park(target)
            return "parked"
        case "release":
            guard isParked else { return "not parked" }
            try DurableQueue.setParked(target, false, reason: nil, in: db)
            scheduler.release(target)
            if let head = try QueueTools.head(of: target, in: db) {
                try db.run("UPDATE tasks SET attempts = 0, crashes = 0, not_before = 0 WHERE id = ?", [.integer(head)])
                run.resetAttempts.withLock { _ = $0.insert(head) }
            }
            try run.released(target, in: db)
            return "released"
        case "drain":
            guard isParked else { return "not parked: park it first" }
            // Every queued row of the target becomes a dead letter in this transaction, those the
            // scheduler holds included (its drain then only counts them); the rows the feed left
            // in the queue or has not handed on yet are told to their batches here.
            let (skipped, lastYielded) = run.feed.withLock { state in
                (state.parked[target] ?? nil, state.lastYielded)
            }
            let rows = try QueueTools.drain(target, in: db)
            for row in rows { writeDeadLetter(row, error: "drained by operator") }
            scheduler.drain(target)
            for row in rows where row.row >= (skipped ?? .max) || row.row > lastYielded {
                row.batch.flatMap { name in run.trackers.withLock { $0[row.source + "/" + name] } }?
                    .final(failed: true)
            }
            run.feed.withLock { state in
                state.parked[target] = nil
                if let last = rows.last?.row { state.drainedThrough[target] = last }
            }
            try DurableQueue.setParked(target, false, reason: nil, in: db)
            return "drained \(rows.count) queued task\(rows.count == 1 ? "" : "s")"
        default:
            return "unknown command \(verb)"
        }
    }

    /// Deletes finished tasks older than the retention, and gives the pages back.
    func compact(_ run: DurableRun) async {
        let retain = Int64((run.queue.settings.retainFinished.seconds * 1000).rounded())
        do {
            let removed = try await run.queue.perform { db in
                let removed = try db.run(
                    "DELETE FROM tasks WHERE state = 2 AND finished_at <= ?", [.integer(unixMilliseconds() - retain)])
                try db.execute("PRAGMA incremental_vacuum(2000)")
                return removed
            }
            if removed > 0 { logger.debug("queue compacted", metadata: ["removed": "\(removed)"]) }
        } catch {
            run.fail(error)
        }
    }
}

/// Statements of the operator's tools, shared by `taskhost targets` and a running host.
enum QueueTools {
    static func isParked(_ target: TargetID, in db: SQLiteDatabase) throws -> Bool {
        try db.integer(
            "SELECT parked FROM targets WHERE target_kind = ? AND target = ?",
            [.integer(target.storedKind), .text(target.storedText)]) == 1
    }

    /// The first queued row of a target.
    static func head(of target: TargetID, in db: SQLiteDatabase) throws -> Int64? {
        try db.integer(
            "SELECT id FROM tasks WHERE target = ? AND target_kind = ? AND state = 0 ORDER BY id LIMIT 1",
            [.text(target.storedText), .integer(target.storedKind)])
    }

    /// Dead-letters every queued row of a target; returns them.
    static func drain(_ target: TargetID, in db: SQLiteDatabase) throws -> [StoredTask] {
        let rows = try DurableQueue.queued(target, in: db)
        let now = unixMilliseconds()
        for row in rows {
            try db.run(
                "UPDATE tasks SET state = 3, finished_at = ?, error = 'drained by operator' WHERE id = ?",
                [.integer(now), .integer(row.row)])
        }
        return rows
    }
}
