import AsyncAlgorithms
import Synchronization
import TaskHostConfig
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

/// Where a pipeline's tasks stay between their source and their end: the only place the run meets
/// persistence. Both implementations are used the same way by the one execution path: sources
/// append to the store (before they acknowledge), the scheduler reads the store's feed and calls
/// its hooks (a lease before an attempt runs, its outcome before its target moves on), and the
/// scheduler decides every policy. ``MemoryStore`` keeps nothing (`queue: memory`); ``DurableRun``
/// keeps everything in the SQLite queue.
protocol PipelineStore: AnyObject, Sendable {
    associatedtype Feed: AsyncSequence & Sendable where Feed.Element == TaskItem<PipelineTask>

    // MARK: Sources

    /// Takes a batch of one source: its tasks, the lines it refused (dead letters) and its
    /// checkpoint. Called under the source's lock, so that its batches keep their order; the
    /// ticket is awaited outside it.
    func submit(_ tasks: [TaskItem<PipelineTask>], refused: [NewTask], checkpoint: Checkpoint?) -> AppendTicket
    /// Whether the store keeps tasks across runs: sources record checkpoints, and a full scheduler
    /// buffer does not refuse new tasks (they wait in the store).
    var isDurable: Bool { get }
    /// Why the store failed, once it did: sources stop, appends are refused.
    var failureMessage: String? { get }
    /// Where a source starts: its next sequence number, and for `file` the offset after its last
    /// committed line (`complete`: read to its end by an earlier run).
    func start(source: String, file: String?, pipeline: Pipeline) async -> (
        seq: UInt64, offset: Int64, complete: Bool, rotated: String?
    )
    /// A batch file of a spool source: its tracker (resumed, or new) and where to read it from.
    func openBatch(_ name: String, of source: SourceConfig, pipeline: Pipeline) async -> (
        tracker: BatchTracker, offset: Int64, complete: Bool
    )
    func dropBatch(_ name: String, of source: String)

    // MARK: The scheduler's side

    /// Readies the store for a run (a durable store puts back what a dead host was running).
    func open(for pipeline: Pipeline) async throws(QueueError)
    /// The scheduler's input.
    func feed(for pipeline: Pipeline) -> Feed
    /// The scheduler's hooks: what the store records of each attempt.
    func hooks(for pipeline: Pipeline) -> SchedulerHooks<PipelineTask>
    /// One attempt at the store's edge (a durable store's crash guard); the router runs it.
    func executeImmediately(_ task: TaskItem<PipelineTask>, context: ExecutionContext, router: PipelineExecutor)
        -> ImmediateOutcome
    func execute(_ task: TaskItem<PipelineTask>, context: ExecutionContext, router: PipelineExecutor) async throws
    /// The scheduler exists and has not started (a durable store applies the operator commands left
    /// while no host ran).
    func ready(for pipeline: Pipeline, scheduler: Scheduler<RunExecutor<Self>, ContinuousClock>) async
    /// Parts of the run the store needs beside the scheduler (operator commands, compaction).
    func services(for pipeline: Pipeline, scheduler: Scheduler<RunExecutor<Self>, ContinuousClock>)
        -> [(name: String, body: @Sendable () async -> Void)]
    /// Tasks kept and not started, for `/status` and `/metrics`; nil when the store keeps none.
    func depth() async -> QueueDepth?

    // MARK: The end

    /// Every source ended: the feed ends once it handed on what is left.
    func sourcesFinished()
    /// The run stops: the feed hands on nothing more.
    func stop()
    /// After the run: what it leaves behind (tasks left for the next run, or written as cut off).
    func close(_ summary: RunSummary<PipelineTask>, pipeline: Pipeline, into out: inout Pipeline.Summary) async
}

/// What an append gives back: awaited outside the source's lock.
enum AppendTicket: Sendable {
    /// Handed on at once (nothing to wait for), or refused (the store failed).
    case done(Bool)
    /// Tasks to send into the scheduler's input, with back-pressure; `duplicates` were not sent.
    case send([TaskItem<PipelineTask>], AsyncChannel<[TaskItem<PipelineTask>]>, duplicates: [Int: ExistingTask])
    /// A commit of the durable queue.
    case commit(CommitTicket)
    /// A commit the waiter helps along (`work` commits pending batches in order), then awaits.
    case perform(CommitTicket, @Sendable () async -> Void)

    func wait() async -> AppendResult {
        switch self {
        case .done(let ok): return ok ? .committed([:]) : .failed
        case .send(let tasks, let channel, let duplicates):
            if !tasks.isEmpty { await channel.send(tasks) }
            return .committed(duplicates)
        case .commit(let ticket): return await ticket.wait()
        case .perform(let ticket, let work):
            await work()
            return await ticket.wait()
        }
    }
}

/// The store of `queue: memory`: sources hand their tasks straight to the scheduler (the buffer is
/// the whole window); nothing survives the process. The scheduler runs without hooks, on its
/// fastest paths.
final class MemoryStore: PipelineStore {
    let channel = AsyncChannel<[TaskItem<PipelineTask>]>()
    /// The producers' ids of the tasks not final, and of those final within the dedup window.
    let ids = TaskIds(window: QueueSettings(path: "").dedupWindow)

    func submit(_ tasks: [TaskItem<PipelineTask>], refused: [NewTask], checkpoint: Checkpoint?) -> AppendTicket {
        if tasks.isEmpty { return .done(true) }
        // Only tasks that bring an id pay for the check.
        guard tasks.contains(where: { $0.id != nil }) else { return .send(tasks, channel, duplicates: [:]) }
        let duplicates = ids.claim(tasks.map(\.id), now: unixMilliseconds())
        if duplicates.isEmpty { return .send(tasks, channel, duplicates: [:]) }
        let fresh = tasks.indices.filter { duplicates[$0] == nil }.map { tasks[$0] }
        return .send(fresh, channel, duplicates: duplicates)
    }

    var isDurable: Bool { false }
    var failureMessage: String? { nil }

    func start(source: String, file: String?, pipeline: Pipeline) async -> (
        seq: UInt64, offset: Int64, complete: Bool, rotated: String?
    ) {
        (1, 0, false, nil)
    }

    func openBatch(_ name: String, of source: SourceConfig, pipeline: Pipeline) async -> (
        tracker: BatchTracker, offset: Int64, complete: Bool
    ) {
        (pipeline.spoolTracker(source, name: name, run: nil), 0, false)
    }

    func dropBatch(_ name: String, of source: String) {}

    func open(for pipeline: Pipeline) async throws(QueueError) {}

    func feed(for pipeline: Pipeline) -> Batches { Batches(channel: channel) }

    func hooks(for pipeline: Pipeline) -> SchedulerHooks<PipelineTask> {
        let metrics = pipeline.metrics
        let ids = self.ids
        return SchedulerHooks(
            attemptStarted: { task, _, wait in
                metrics.of(task).queueWait.record(wait)
                if let id = task.id { ids.started(id) }
            },
            attemptFinished: { record in
                pipeline.finished(record, durable: nil)
                if let id = record.task.id {
                    switch record.disposition {
                    case .succeeded: ids.finished(id, as: .succeeded, now: unixMilliseconds())
                    case .deadLettered: ids.finished(id, as: .dead, now: unixMilliseconds())
                    case .retrying, .parked, .cancelled: ids.started(id, state: .queued)
                    }
                }
            })
    }

    @inline(__always)
    func executeImmediately(_ task: TaskItem<PipelineTask>, context: ExecutionContext, router: PipelineExecutor)
        -> ImmediateOutcome
    {
        router.executeImmediately(task, context: context)
    }

    @inline(__always)
    func execute(_ task: TaskItem<PipelineTask>, context: ExecutionContext, router: PipelineExecutor) async throws {
        try await router.execute(task, context: context)
    }

    func ready(for pipeline: Pipeline, scheduler: Scheduler<RunExecutor<MemoryStore>, ContinuousClock>) async {}

    func services(for pipeline: Pipeline, scheduler: Scheduler<RunExecutor<MemoryStore>, ContinuousClock>)
        -> [(name: String, body: @Sendable () async -> Void)]
    { [] }

    func depth() async -> QueueDepth? { nil }

    func sourcesFinished() { channel.finish() }

    func stop() { channel.finish() }

    /// Tasks that did not finish are written to the results as parked or cancelled: nothing keeps
    /// them.
    func close(_ summary: RunSummary<PipelineTask>, pipeline: Pipeline, into out: inout Pipeline.Summary) async {
        for unfinished in summary.unfinished {
            let status = unfinished.reason == .parked ? "parked" : "cancelled"
            let labelled = pipeline.metrics.of(unfinished.task)
            (unfinished.reason == .parked ? labelled.parked : labelled.cancelled).increment()
            pipeline.writeResult(
                unfinished.task, status: status, attempts: unfinished.attempts,
                error: status == "parked" ? "its target is parked" : "shut down before it finished")
            unfinished.task.payload.batch?.final(failed: true)
        }
        out.parked = summary.parked
        out.cancelled = summary.cancelled
    }
}

/// The producers' ids with `queue: memory`: an id is taken while its task is not final, and for
/// `window` after (bounded: at most ``capacity`` final ids are remembered, the oldest forgotten
/// first).
final class TaskIds: Sendable {
    struct Entry {
        var state: TaskState
        var finishedAt: Int64
    }

    struct State {
        var entries: [String: Entry] = [:]
        /// Final ids in the order they became final, from `head` on.
        var finals: [(id: String, at: Int64)] = []
        var head = 0
    }

    let state = Mutex(State())
    /// Milliseconds.
    let window: Int64
    let capacity: Int

    init(window: Duration, capacity: Int = 1_000_000) {
        self.window = Int64((window.seconds * 1000).rounded())
        self.capacity = capacity
    }

    /// Takes the ids of a batch (nil: a task without one); returns the duplicates, by index, with
    /// the state of the task that holds the id.
    func claim(_ ids: [String?], now: Int64) -> [Int: ExistingTask] {
        state.withLock { state in
            forgetExpired(&state, now: now)
            var duplicates: [Int: ExistingTask] = [:]
            for (index, id) in ids.enumerated() {
                guard let id else { continue }
                if let entry = state.entries[id], !entry.state.isFinal || entry.finishedAt > now - window {
                    duplicates[index] = ExistingTask(row: 0, state: entry.state)
                } else {
                    state.entries[id] = Entry(state: .queued, finishedAt: 0)
                }
            }
            return duplicates
        }
    }

    func started(_ id: String, state new: TaskState = .running) {
        state.withLock { state in
            if state.entries[id]?.state.isFinal == false { state.entries[id]?.state = new }
        }
    }

    func finished(_ id: String, as final: TaskState, now: Int64) {
        state.withLock { state in
            state.entries[id] = Entry(state: final, finishedAt: now)
            state.finals.append((id, now))
        }
    }

    private func forgetExpired(_ state: inout State, now: Int64) {
        while state.head < state.finals.count,
            state.finals[state.head].at <= now - window || state.finals.count - state.head > capacity
        {
            let (id, at) = state.finals[state.head]
            if let entry = state.entries[id], entry.state.isFinal, entry.finishedAt == at {
                state.entries[id] = nil
            }
            state.head += 1
        }
        if state.head > 1024, state.head * 2 > state.finals.count {
            state.finals.removeFirst(state.head)
            state.head = 0
        }
    }
}
