import Foundation
import Logging
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostStore

/// The state of one run on the durable queue: what was fed to the scheduler, the parked
/// targets, the batch files in flight, and the wake-up of the feed.
final class DurableRun: Sendable {
    let queue: DurableQueue
    let executorIndex: [String: Int]
    let logger: Logger

    struct FeedState {
        /// The last row read from the queue (rows are read in arrival order).
        var lastFed: Int64 = 0
        /// The last row handed to the scheduler (or skipped for a parked target).
        var lastYielded: Int64 = 0
        /// Rows read and not yet handed on.
        var buffer: [StoredTask] = []
        var index = 0
        /// Parked targets, with the first row the feed skipped for each (left in the queue).
        var parked: [TargetID: Int64?] = [:]
        /// Drained targets: their rows up to this one were dead-lettered by the drain.
        var drainedThrough: [TargetID: Int64] = [:]
        /// Rows of released targets, handed on before the rest.
        var refeed: [StoredTask] = []
        var sourcesDone = false
        var stopped = false
        var generation: UInt64 = 0
        var waiter: CheckedContinuation<Void, Never>?

        /// The next row to hand on, skipping parked and drained targets' rows; nil when none is read.
        mutating func pop() -> StoredTask? {
            while true {
                let row: StoredTask
                if !refeed.isEmpty {
                    row = refeed.removeFirst()
                } else if index < buffer.count {
                    row = buffer[index]
                    index += 1
                    lastYielded = max(lastYielded, row.row)
                } else {
                    buffer.removeAll(keepingCapacity: true)
                    index = 0
                    return nil
                }
                if let skipped = parked[row.target] {
                    if skipped == nil { parked[row.target] = .some(row.row) }
                    continue
                }
                if let drained = drainedThrough[row.target], row.row <= drained { continue }
                return row
            }
        }
    }

    let feed = Mutex(FeedState())
    /// Batch files of spool sources still in flight, by "source/name".
    let trackers = Mutex<[String: BatchTracker]>([:])
    /// Set when the queue failed (a full disk): the run stops with this error.
    let failure = Mutex<QueueError?>(nil)
    /// Set once a shutdown began: an attempt cut off goes back to the queue unchanged.
    let stopping = Atomic<Bool>(false)
    /// Tasks fed before their persisted backoff ended (not retries: they did not run).
    let notDue = Atomic<Int>(0)
    /// Rows whose attempts an operator's release reset, for the scheduler's copy of them.
    let resetAttempts = Mutex<Set<Int64>>([])
    /// Tasks during which the host died run one at a time (see ``HostCrashes``).
    let suspects = SuspectGate()
    let onFailure: @Sendable (QueueError) -> Void

    init(
        queue: DurableQueue, executors: [String], logger: Logger, onFailure: @escaping @Sendable (QueueError) -> Void
    ) {
        self.queue = queue
        self.executorIndex = Dictionary(executors.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        self.logger = logger
        self.onFailure = onFailure
    }

    /// Puts back the tasks a dead host was running, counting the attempts it cut off (and each
    /// as a crash: a graceful stop puts its cut-off tasks back itself), and loads the parked
    /// targets. Returns how many tasks were put back.
    func recover() throws(QueueError) -> Int {
        // Attempts that finish inline are not leased: the journal names those a crash cut off.
        let cutOff = queue.running?.leftovers() ?? []
        let (reclaimed, parked) = try queue.transaction { db -> (Int, [TargetID]) in
            // A leased attempt was counted when it was leased (and is in the journal too).
            var reclaimed = try db.run("UPDATE tasks SET state = 0, crashes = crashes + 1 WHERE state = 1")
            for entry in cutOff {
                // Counted once: a crash before the journal is cleared finds the count made.
                reclaimed += try db.run(
                    "UPDATE tasks SET attempts = ?, crashes = crashes + 1 WHERE id = ? AND state = 0 AND attempts < ?",
                    [.int(entry.attempt), .integer(entry.row), .int(entry.attempt)])
            }
            let statement = try db.statement("SELECT target_kind, target FROM targets WHERE parked = 1")
            var parked: [TargetID] = []
            while try statement.step() {
                if let target = TargetID(kind: statement.int(0), text: statement.text(1)) { parked.append(target) }
            }
            return (reclaimed, parked)
        }
        // Counted: a crash before this line finds them counted.
        queue.running?.clear()
        feed.withLock { state in
            for target in parked { state.parked[target] = .some(nil) }
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

    /// Queues a write without waiting for it; a failure stops the run (never silently dropped).
    func write(_ body: @escaping (SQLiteDatabase) throws -> Void) {
        queue.submit(body) { [self] error in
            if let error { fail(error) }
        }
    }

    /// New rows were committed (by a source, a release, or another process): wake the feed.
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
        stopping.store(true, ordering: .releasing)
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

    /// The next row to hand to the scheduler, in arrival order; nil when the feed is over.
    func nextRow() async -> StoredTask? {
        while true {
            enum Next {
                case row(StoredTask)
                case read(after: Int64, generation: UInt64, done: Bool)
                case end
            }
            let next = feed.withLock { state -> Next in
                if state.stopped { return .end }
                if let row = state.pop() { return .row(row) }
                return .read(after: state.lastFed, generation: state.generation, done: state.sourcesDone)
            }
            switch next {
            case .end:
                return nil
            case .row(let row):
                return row
            case .read(let after, let generation, let done):
                if failure.withLock({ $0 != nil }) { return nil }
                let rows: [StoredTask]
                do {
                    rows = try await queue.perform { db in try DurableQueue.queued(after: after, limit: 512, in: db) }
                } catch {
                    fail(error)
                    return nil
                }
                if let last = rows.last {
                    feed.withLock { state in
                        state.lastFed = max(state.lastFed, last.row)
                        state.buffer.append(contentsOf: rows)
                    }
                    continue
                }
                if done { return nil }
                await waitForArrival(after: generation)
            }
        }
    }

    // MARK: Operator commands

    /// Marks a target parked: the feed leaves its later rows in the queue.
    func parked(_ target: TargetID) {
        feed.withLock { state in
            if state.parked[target] == nil { state.parked[target] = .some(nil) }
        }
    }

    /// Un-parks a target; the rows the feed skipped are fed next. Call inside a queue transaction.
    func released(_ target: TargetID, in db: SQLiteDatabase) throws {
        let (skipped, lastYielded) = feed.withLock { state -> (Int64??, Int64) in
            defer { state.parked[target] = nil }
            return (state.parked[target], state.lastYielded)
        }
        guard case .some(.some(let first)) = skipped else { return }
        let rows = try DurableQueue.queued(target, from: first, through: lastYielded, in: db)
        feed.withLock { $0.refeed.append(contentsOf: rows) }
    }
}

/// The scheduler's input on the durable queue: committed rows, in arrival order.
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
            }
            return nil
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(run: run, makeTask: makeTask) }
}

/// Thrown for a task fed before its persisted backoff ends: the scheduler holds its target and
/// tries again after the rest of the delay, without running it.
struct NotDueYet: Error, CustomStringConvertible {
    var description: String { "backing off" }
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
