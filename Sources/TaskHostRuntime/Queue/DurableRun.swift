import Foundation
import Logging
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

/// The durable queue at the edges of one run: what the sources append, the feed that hands the
/// scheduler rows by target, what each attempt leaves (its lease before it runs, its outcome
/// before its target moves on), and the operators' commands. The scheduler decides every policy
/// (retries, backoff, timeouts, park, dead letters); this only records and restores.
final class DurableRun: Sendable {
    let queue: DurableQueue
    /// The pipeline's executors, by position and by name.
    let executorNames: [String]
    let executorIndex: [String: Int]
    let logger: Logger

    struct FeedState {
        var feed: TargetFeed
        var sourcesDone = false
        var stopped = false
        var generation: UInt64 = 0
        var waiter: CheckedContinuation<Void, Never>?
    }

    let feed: Mutex<FeedState>
    /// Batch files of spool sources still in flight, by "source/name".
    let trackers = Mutex<[String: BatchTracker]>([:])
    /// Set when the queue failed (a full disk): the run stops with this error.
    let failure = Mutex<QueueError?>(nil)
    /// Rows whose crash count an operator's release reset, for the scheduler's copy of them.
    let resetCrashes = Mutex<Set<Int64>>([])
    /// Tasks during which the host died run one at a time (see ``HostCrashes``).
    let suspects = SuspectGate()
    let onFailure: @Sendable (QueueError) -> Void

    /// - Parameter window: rows of one target the scheduler holds at most (``TargetFeed``).
    init(
        queue: DurableQueue, executors: [String], window: Int, logger: Logger,
        onFailure: @escaping @Sendable (QueueError) -> Void
    ) {
        self.queue = queue
        self.executorNames = executors
        self.executorIndex = Dictionary(executors.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        self.logger = logger
        self.onFailure = onFailure
        feed = Mutex(FeedState(feed: TargetFeed(window: window)))
    }

    /// The window of one target for a scheduler buffer of `bufferSize` tasks: a quarter of it, so
    /// that no target fills the buffer, at most 256 rows (a refill reads them in one query).
    static func window(bufferSize: Int) -> Int { max(1, min(256, bufferSize / 4)) }

    /// Puts back the tasks a dead host was running, counting the attempts it cut off (and each
    /// as a crash: a graceful stop records its cut-off tasks itself), and loads the parked
    /// targets. Returns how many tasks were put back.
    func recover() throws(QueueError) -> Int {
        // The journal names the attempts whose outcome was not committed: inline ones, and those
        // that ended but whose outcome a crash kept from the queue.
        let cutOff = queue.running?.leftovers() ?? []
        let (reclaimed, parked) = try queue.transaction { db in try db.recover(cutOff: cutOff) }
        // Counted: a crash after this line finds them counted.
        queue.running?.clear()
        feed.withLock { state in
            for target in parked { state.feed.park(target) }
        }
        return reclaimed
    }

    func fail(_ error: QueueError) {
        let first = failure.withLock { failure -> Bool in
            defer { if failure == nil { failure = error } }
            return failure == nil
        }
        if first {
            logger.critical("\(error.message)", metadata: ["queue": "\(error.path)", "remedy": "\(error.remedy)"])
            onFailure(error)
        }
    }

    var hasFailed: Bool { failure.withLock { $0 != nil } }

    /// Queues a write without waiting for it; a failure stops the run (never silently dropped).
    func write(_ body: @escaping (SQLiteDatabase) throws -> Void) {
        queue.submit(body) { [self] error in
            if let error { fail(error) }
        }
    }

    // MARK: The feed

    /// Wakes the feed: new rows were committed (by a source, a release, or another process), or
    /// a target has room for a refill.
    func arrived() {
        let waiter = feed.withLock { state -> CheckedContinuation<Void, Never>? in
            state.generation &+= 1
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    func sourcesFinished() {
        feed.withLock { $0.sourcesDone = true }
        arrived()
    }

    func stop() {
        feed.withLock { $0.stopped = true }
        arrived()
    }

    private func waitForArrival(after generation: UInt64) async {
        await withCheckedContinuation { continuation in
            let now = feed.withLock { state -> Bool in
                if state.generation != generation || state.stopped { return true }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// The next row for the scheduler (``TargetFeed``); nil when the feed is over: the sources
    /// are done and every row was handed, but those of parked targets.
    func nextRow() async -> StoredTask? {
        while true {
            enum Step {
                case next(TargetFeed.Next, generation: UInt64, done: Bool)
                case end
            }
            let step = feed.withLock { state -> Step in
                if state.stopped { return .end }
                return .next(
                    state.feed.next(), generation: state.generation,
                    done: state.sourcesDone && !state.feed.isHoldingBack)
            }
            guard case .next(let next, let generation, let done) = step else { return nil }
            if hasFailed { return nil }
            do {
                switch next {
                case .row(let row):
                    return row
                case .refill(let target, let from, let through, let limit):
                    let rows = try await queue.perform { db in
                        try db.queued(target, from: from, through: through, limit: limit)
                    }
                    feed.withLock { $0.feed.refilled(target, rows: rows, limit: limit) }
                case .read(let after):
                    let rows = try await queue.perform { db in try db.queued(after: after, limit: 512) }
                    if !rows.isEmpty {
                        feed.withLock { $0.feed.read(rows) }
                        continue
                    }
                    if done { return nil }
                    await waitForArrival(after: generation)
                }
            } catch {
                fail(error)
                return nil
            }
        }
    }

    /// A handed row became final: its target may take more rows.
    func rowFinished(_ target: TargetID) {
        if feed.withLock({ $0.feed.finished(target) }) { arrived() }
    }

    // MARK: Attempts

    /// What a row brings from before: its attempts and what is left of its backoff.
    func history(of record: DurableRecord) -> TaskHistory {
        let left = record.notBefore - unixMilliseconds()
        return TaskHistory(attempts: record.attempts, startAfter: left > 0 ? .milliseconds(left) : .zero)
    }

    /// Attempts during which the host died, for this row (an operator's release resets them).
    func crashes(of record: DurableRecord) -> Int {
        resetCrashes.withLock { $0.contains(record.row) } ? 0 : record.crashes
    }

    /// An attempt starts: journaled (no SQLite write), so that a crash from here until its
    /// outcome is committed counts it.
    func leased(_ record: DurableRecord, attempt: Int) {
        if let slot = queue.running?.begin(row: record.row, attempt: attempt) {
            record.journalSlot.store(slot, ordering: .relaxed)
        } else {
            // The journal is full: the row itself records the attempt.
            record.journalSlot.store(-1, ordering: .relaxed)
            markRunning(record, attempt: attempt)
        }
    }

    /// An attempt that did not finish inline: the queue shows it running.
    func markRunning(_ record: DurableRecord, attempt: Int) {
        let now = unixMilliseconds()
        write { db in try db.markRunning(record.row, attempt: attempt, at: now) }
    }

    /// Commits how an attempt ended; only then is its journal entry cleared, so a crash before the
    /// commit counts the attempt and the next run carries a higher attempt number.
    func record(_ outcome: RecordedOutcome, of record: DurableRecord, attempt: Int, target: TargetID) async {
        // A suspect lets the next one in only now: had it left the gate when its attempt ended, a
        // suspect let in before this commit could crash the host and have this one counted again.
        defer { if record.holdsGate.exchange(false, ordering: .relaxed) { suspects.leave() } }
        if hasFailed { return }
        let now = unixMilliseconds()
        do {
            try await queue.perform { db in
                try db.record(outcome, row: record.row, attempt: attempt, target: target, at: now)
            }
        } catch {
            fail(error)
            return
        }
        let slot = record.journalSlot.exchange(-1, ordering: .relaxed)
        if slot >= 0 { queue.running?.end(slot) }
    }

    // MARK: Operator commands

    func parked(_ target: TargetID) {
        feed.withLock { $0.feed.park(target) }
    }

    func released(_ target: TargetID) {
        if feed.withLock({ $0.feed.release(target) }) { arrived() }
    }

    func drained(_ target: TargetID, through row: Int64) {
        if feed.withLock({ $0.feed.drained(target, through: row) }) { arrived() }
    }
}

/// The scheduler's input on the durable queue: committed rows, by target.
struct QueueFeed: AsyncSequence, Sendable {
    typealias Element = TaskItem<PipelineTask>
    let run: DurableRun
    let makeTask: @Sendable (StoredTask) -> TaskItem<PipelineTask>?

    struct AsyncIterator: AsyncIteratorProtocol {
        let run: DurableRun
        let makeTask: @Sendable (StoredTask) -> TaskItem<PipelineTask>?

        mutating func next() async -> TaskItem<PipelineTask>? {
            while let row = await run.nextRow() {
                if let task = makeTask(row) { return task }
                run.rowFinished(row.target)
            }
            return nil
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(run: run, makeTask: makeTask) }
}

/// Lets one suspect at a time run: a task during which the host died (see ``HostCrashes``). When
/// the host dies, every task running at that moment is counted, the innocent with the guilty;
/// run one at a time afterwards, they are not counted together again, so an innocent task is not
/// given up for a crash it sat beside. Others run beside a suspect as usual.
final class SuspectGate: Sendable {
    private struct State {
        var busy = false
        var next: UInt64 = 0
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        /// Waiters cancelled before they queued their continuation.
        var cancelled: Set<UInt64> = []
    }
    private let state = Mutex(State())

    /// Waits until no other suspect runs; throws `CancellationError` when cancelled meanwhile.
    func enter() async throws {
        let id = state.withLock { state -> UInt64? in
            if !state.busy {
                state.busy = true
                return nil
            }
            state.next &+= 1
            return state.next
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let cancelled = state.withLock { state -> Bool in
                    if state.cancelled.remove(id) != nil { return true }
                    state.waiters.append((id, continuation))
                    return false
                }
                if cancelled { continuation.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            let continuation = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else {
                    // Not queued yet, or already let in (then ``leave()`` follows as usual).
                    state.cancelled.insert(id)
                    return nil
                }
                return state.waiters.remove(at: index).continuation
            }
            continuation?.resume(throwing: CancellationError())
        }
    }

    /// The suspect that entered ended: lets the next one in.
    func leave() {
        let next = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard !state.waiters.isEmpty else {
                state.busy = false
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        next?.resume()
    }
}
