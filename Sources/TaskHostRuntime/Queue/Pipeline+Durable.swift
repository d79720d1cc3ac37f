import AsyncAlgorithms
import Dispatch
import Foundation
import Logging
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

/// One source's batches on their way to the store: collected as the source reads, handed on
/// (`flush`) in order, one batch per chunk read, at most 256 tasks (a hand-off per task would
/// cost a task switch, or a commit, each). With the source's checkpoint in the same append.
final class Intake<Store: PipelineStore>: Sendable {
    let store: Store
    /// Tasks a commit found duplicates of earlier ones (not queued), with the earlier task.
    let onDuplicates: @Sendable ([(TaskItem<PipelineTask>, ExistingTask)]) -> Void

    struct State {
        var tasks: [TaskItem<PipelineTask>] = []
        var refused: [NewTask] = []
        var checkpoint: Checkpoint?
        /// The last commit handed to the store: a flush that finds nothing to hand on waits for
        /// it, since it may hold the caller's tasks (another caller took them).
        var lastCommit: AppendTicket?
    }

    let state = Mutex(State())

    init(store: Store, onDuplicates: @escaping @Sendable ([(TaskItem<PipelineTask>, ExistingTask)]) -> Void) {
        self.store = store
        self.onDuplicates = onDuplicates
    }

    /// Adds a task; true when the batch is full and should be flushed.
    func add(_ item: TaskItem<PipelineTask>, checkpoint: Checkpoint?) -> Bool {
        state.withLock { state in
            if let checkpoint { state.checkpoint = checkpoint }
            state.tasks.append(item)
            return state.tasks.count >= 256
        }
    }

    /// Adds an input that could not be read: a durable store keeps it as a dead letter.
    func reject(_ row: NewTask, checkpoint: Checkpoint?) {
        state.withLock { state in
            if let checkpoint { state.checkpoint = checkpoint }
            if store.isDurable { state.refused.append(row) }
        }
    }

    func mark(_ checkpoint: Checkpoint) { state.withLock { $0.checkpoint = checkpoint } }

    /// Hands the batch on. On the durable queue it returns once everything this source added
    /// before the call is committed. When the queue is full the batch is kept, ahead of what is
    /// added next, for the next flush (``AppendResult/full``).
    func flush() async -> AppendResult {
        if store.failureMessage != nil { return .failed }
        // Taken and submitted under the lock: batches reach the store in order they were read.
        let (ticket, batch) = state.withLock {
            state -> (AppendTicket?, (tasks: [TaskItem<PipelineTask>], refused: [NewTask], checkpoint: Checkpoint?)?) in
            guard !state.tasks.isEmpty || !state.refused.isEmpty || state.checkpoint != nil else {
                return (state.lastCommit, nil)
            }
            let batch = (state.tasks, state.refused, state.checkpoint)
            let ticket = store.submit(state.tasks, refused: state.refused, checkpoint: state.checkpoint)
            state.tasks = []
            state.refused = []
            state.checkpoint = nil
            if case .commit = ticket { state.lastCommit = ticket }
            return (ticket, batch)
        }
        guard let ticket else { return .committed([:]) }
        let result = await ticket.wait()
        guard let batch else { return result }
        switch result {
        case .committed(let duplicates) where !duplicates.isEmpty:
            onDuplicates(duplicates.sorted { $0.key < $1.key }.map { (batch.tasks[$0.key], $0.value) })
        case .full:
            // Kept for the next try, ahead of what the source added since.
            state.withLock { state in
                state.tasks = batch.tasks + state.tasks
                state.refused = batch.refused + state.refused
                if state.checkpoint == nil { state.checkpoint = batch.checkpoint }
            }
        default:
            break
        }
        return result
    }
}

/// What became of an append.
enum AppendResult: Sendable {
    /// Committed (or handed to the scheduler); the tasks that were duplicates of earlier ones, by
    /// their index in the append, were not.
    case committed([Int: ExistingTask])
    /// Refused whole: the durable queue is full (not fatal: try again once space returns).
    case full
    /// The store failed or the run stops.
    case failed

    var succeeded: Bool {
        if case .committed = self { return true }
        return false
    }
}

/// The commit of one batch, awaited by every caller whose tasks it holds.
final class CommitTicket: Sendable {
    let state = Mutex<(result: AppendResult?, waiters: [CheckedContinuation<AppendResult, Never>])>((nil, []))

    func finish(_ result: AppendResult) {
        let waiters = state.withLock { state in
            state.result = result
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: result) }
    }

    func wait() async -> AppendResult {
        await withCheckedContinuation { continuation in
            let result = state.withLock { state -> AppendResult? in
                if state.result == nil { state.waiters.append(continuation) }
                return state.result
            }
            if let result { continuation.resume(returning: result) }
        }
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

/// The pipeline's executor: the router, behind the store's edge.
struct RunExecutor<Store: PipelineStore>: TaskItemExecutor {
    typealias Payload = PipelineTask
    let router: PipelineExecutor
    let store: Store

    var supportsImmediateExecution: Bool { true }

    @inline(__always)
    func executeImmediately(_ task: TaskItem<PipelineTask>, context: ExecutionContext) -> ImmediateOutcome {
        store.executeImmediately(task, context: context, router: router)
    }

    @inline(__always)
    func execute(_ task: TaskItem<PipelineTask>, context: ExecutionContext) async throws {
        try await store.execute(task, context: context, router: router)
    }
}

extension Pipeline {
    /// The scheduler's hooks on the durable queue: a task's history at admission, its lease when
    /// an attempt starts, its outcome (and result line) committed before its target moves on.
    func durableHooks(_ run: DurableRun) -> SchedulerHooks<PipelineTask> {
        let metrics = self.metrics
        return SchedulerHooks(
            attemptStarted: { task, context, wait in
                metrics.of(task).queueWait.record(wait)
                // A suspect is journaled when it passes the gate (RunExecutor); a task refused for
                // its crashes does not run.
                if let record = task.payload.durable, run.crashes(of: record) == 0 {
                    run.leased(record, attempt: context.attempt)
                }
            },
            attemptFinished: { [self] record in finished(record, durable: run) },
            beforeRelease: { [self] record in await self.record(record, run: run) },
            history: { task in task.payload.durable.map { run.history(of: $0) } })
    }

    /// What an attempt leaves on the durable queue, as the scheduler decided it: its result line
    /// and dead letter, then its row, committed (the sinks are flushed before the commit).
    func record(_ attempt: AttemptRecord<PipelineTask>, run: DurableRun) async {
        let task = attempt.task
        guard let record = task.payload.durable else { return }
        // Attempts made: one refused for the host's crashes (HostCrashes) did not run.
        let refused = (attempt.error as? NonRetryableError)?.underlying is HostCrashes
        let number = attempt.context.attempt - (refused ? 1 : 0)
        let message = attempt.error.map { "\($0)" } ?? ""
        let outcome: RecordedOutcome
        var final = false
        switch attempt.disposition {
        case .succeeded:
            if !run.hasFailed { writeResult(task, status: "succeeded", attempts: number, error: nil) }
            outcome = .succeeded(output: task.payload.log.snapshot.output)
            final = true
        case .retrying(let delay):
            outcome = .retry(notBefore: unixMilliseconds() + Int64((delay.seconds * 1000).rounded(.up)), error: message)
        case .parked:
            run.parked(task.targetId)
            outcome = .parked(error: message)
        case .deadLettered:
            if !run.hasFailed {
                writeResult(task, status: "deadLettered", attempts: number, error: message)
                writeDeadLetter(task, error: message, attempts: number)
            }
            outcome = .dead(error: message)
            final = true
        case .cancelled:
            // Cut off by shutdown: back to the head of its target, with its attempt count.
            outcome = .cutOff
        }
        await run.record(outcome, of: record, attempt: number, target: task.targetId)
        if final, !run.hasFailed {
            run.rowFinished(task.targetId)
            task.payload.batch?.final(failed: attempt.disposition != .succeeded)
        }
    }

    /// A queued row as the scheduler's task; nil (and a dead letter) when its executor is gone.
    func makeTask(_ stored: StoredTask, run: DurableRun) -> TaskItem<PipelineTask>? {
        guard let index = run.executorIndex[stored.executor] else {
            let error = "its executor '\(stored.executor)' is not in the configuration any more"
            writeDeadLetter(stored, error: error)
            counters.finished.add(1, ordering: .relaxed)
            stored.batch.flatMap { name in run.trackers.withLock { $0[stored.source + "/" + name] } }?.final(
                failed: true)
            let now = unixMilliseconds()
            run.write { db in try db.recordDead(stored.row, error: error, at: now) }
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
        for source in config.sources {
            guard case .directory(let folder) = source.input else { continue }
            let entries = try run.queue.transaction { db -> [(String, Int, Int)] in
                try db.checkpointedFiles(of: source.name).map { file in
                    let (pending, failed) = try db.batchCounts(source: source.name, batch: file)
                    return (file, pending, failed)
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
        guard case .directory(let folder) = source.input else { preconditionFailure("a batch of a spool source") }
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
                run.write { db in try db.deleteCheckpoint(source: source.name, file: name) }
            }
        }
    }

    /// Where a source resumes: its next sequence number, and for a file the offset of the
    /// first line not yet committed (0 when the file was replaced or truncated). When the path
    /// names another file than the checkpoint's (a rotation), and that file is still beside it
    /// under a name that begins with the path's (`in.jsonl.1`), its rest is read first (`rotated`).
    func resumePoint(_ source: String, file: String?, run: DurableRun) async -> (
        seq: UInt64, offset: Int64, complete: Bool, rotated: String?
    ) {
        do {
            let (next, checkpoint) = try await run.queue.perform { db -> (UInt64, Checkpoint?) in
                (try db.nextSequence(of: source), try file.flatMap { try db.checkpoint(source: source, file: $0) })
            }
            guard let checkpoint, let path = file else { return (next, 0, false, nil) }
            let found = config.sources.first { $0.name == source }
            let full = found.flatMap { found -> String? in
                if case .directory(let folder) = found.input { return folder }
                return nil
            }
            let identity = fileIdentity(full.map { $0 + "/" + path } ?? path)
            let sameFile = identity.map { $0.device == checkpoint.device && $0.inode == checkpoint.inode } ?? false
            if !sameFile, case .file(_, follow: true) = found?.input,
                let rotated = rotatedFile(of: path, device: checkpoint.device, inode: checkpoint.inode),
                rotated.size >= checkpoint.offset
            {
                logger.info(
                    "the file was rotated since it was read: reading the rest of the rotated file, then the new one from its start",
                    metadata: [
                        "source": "\(source)", "file": "\(path)", "rotated": "\(rotated.path)",
                        "offset": "\(checkpoint.offset)",
                    ])
                return (next, checkpoint.offset, false, rotated.path)
            }
            guard let identity, sameFile, identity.size >= checkpoint.offset else {
                logger.warning(
                    "the file was replaced or truncated since it was read: reading it from the start",
                    metadata: ["source": "\(source)", "file": "\(path)"])
                return (next, 0, false, nil)
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
            return (next, checkpoint.offset, checkpoint.complete, nil)
        } catch {
            run.fail(error)
            return (1, 0, true, nil)
        }
    }

    // MARK: Operator commands on a running host

    /// Applies the commands `taskhost targets` left in the queue (it signals SIGUSR1).
    func applyCommands(_ run: DurableRun, scheduler: Scheduler<RunExecutor<DurableRun>, ContinuousClock>) async {
        do {
            try await run.queue.perform { db in
                for (id, verb, target) in try db.pendingCommands() {
                    let result = try verb.map { try self.apply($0, target, run: run, scheduler: scheduler, db: db) }
                    let text = result?.description ?? "unknown command"
                    self.logger.info(
                        "operator command",
                        metadata: ["command": "\(verb?.rawValue ?? "?") \(target)", "result": "\(text)"])
                    try db.answer(command: id, with: text)
                }
            }
        } catch {
            run.fail(error)
        }
        run.arrived()
    }

    /// One command: the queue's part (shared with the offline tools), then the scheduler's and the
    /// feed's.
    private func apply(
        _ verb: TargetVerb, _ target: TargetID, run: DurableRun,
        scheduler: Scheduler<RunExecutor<DurableRun>, ContinuousClock>,
        db: SQLiteDatabase
    ) throws -> TargetCommandOutcome {
        let head = verb == .release ? try db.queued(target, limit: 1).first : nil
        let (outcome, drained) = try db.apply(verb, target)
        switch outcome {
        case .parked:
            run.parked(target)
            scheduler.park(target)
        case .released:
            // The head's fresh attempts: in the queue (done), and for the scheduler's copy of it.
            if let head { run.resetCrashes.withLock { _ = $0.insert(head.row) } }
            scheduler.release(target)
            run.released(target)
        case .drained:
            // Every queued row of the target is a dead letter now, those the scheduler holds
            // included (its drain only counts them); the batches of rows it does not hold are
            // told here.
            let (leftFrom, lastPassed) = run.feed.withLock { ($0.feed.leftFrom[target], $0.feed.lastPassed) }
            for row in drained { writeDeadLetter(row, error: "drained by operator") }
            scheduler.drain(target)
            for row in drained where row.row >= (leftFrom ?? .max) || row.row > lastPassed {
                row.batch.flatMap { name in run.trackers.withLock { $0[row.source + "/" + name] } }?.final(failed: true)
            }
            if let last = drained.last?.row { run.drained(target, through: last) }
        case .notParked, .drainNeedsPark:
            break
        }
        return outcome
    }

    /// Deletes finished tasks older than the retention (those with a producer's id keep a slim
    /// row for the dedup window), and gives the pages back. While the queue is full, finished
    /// tasks are compacted at once, whatever the retention: room for new tasks comes first.
    func compact(_ run: DurableRun) async {
        let full = health.queueFull
        let retain = full ? 0 : Int64((run.queue.settings.retainFinished.seconds * 1000).rounded())
        let window = Int64((run.queue.settings.dedupWindow.seconds * 1000).rounded())
        do {
            let now = unixMilliseconds()
            let (removed, open) = try await run.queue.perform { db in
                (try db.compact(finishedBefore: now - retain, dedupAfter: now - window), full ? try db.countOpen() : 1)
            }
            if removed > 0 {
                logger.debug("queue compacted", metadata: ["removed": .stringConvertible(removed)])
                // Room again, perhaps: the next append finds out.
                if full { health.setQueueFull(false) }
            } else if open == 0, health.warnStuck() {
                // Nothing left to finish: only room given back by the operator helps.
                logger.error(
                    "the queue is full of dead letters and of finished tasks' ids kept for queue.dedupWindowMs: intake waits until there is room",
                    metadata: [
                        "queue": "\(run.queue.path)",
                        "remedy": "raise queue.maxSizeMB, lower queue.dedupWindowMs, or purge dead letters",
                    ])
            }
        } catch {
            run.fail(error)
        }
    }
}
