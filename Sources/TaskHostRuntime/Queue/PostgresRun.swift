import Foundation
import Logging
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPostgres
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

/// A claim of the PostgreSQL queue, carried beside its task through the scheduler.
final class PostgresRecord: Sendable {
    let claim: PostgresClaim
    /// Set when an attempt started (a claim released before it did has its attempt uncounted).
    let started = Atomic<Bool>(false)

    init(claim: PostgresClaim) { self.claim = claim }
}

/// The shared queue on PostgreSQL as the pipeline's store (preview: one host at a time is what is
/// tested; see docs/operations.md). Sources enqueue (one transaction per batch, in the order the
/// batches were taken); the feed claims ready targets, at most as many as the host may run
/// (`scheduler.maxConcurrency`, 64 when unbounded), each claim fenced; the scheduler decides every
/// policy and its hooks record each outcome with the claim's fence before the target moves on. A
/// retry keeps the claim (the host retries the head itself, the next attempt counted at once). The
/// host holds a lease, renewed on the database's clock, and reaps hosts whose lease ended.
final class PostgresRun: Sendable {
    let queue: PostgresQueue
    let executorNames: [String]
    let executorIndex: [String: Int]
    let maxClaims: Int
    let maxConcurrency: Int
    /// `retry.maxAttempts`, and whether an exhausted head parks its target (`onExhausted: park`).
    let maxAttempts: Int
    let park: Bool
    let logger: Logger
    let onFailure: @Sendable (String) -> Void

    struct State {
        var host: Int64?
        /// Claims whose outcome is not recorded yet, by target.
        var inFlight: [String: PostgresRecord] = [:]
        var sourcesDone = false
        var stopped = false
        var failure: String?
        var generation: UInt64 = 0
        /// Batches of the sources, committed in the order they were taken.
        var pending: [(tasks: [PostgresNewTask], ticket: CommitTicket)] = []
        var draining = false
        /// Heads dead-lettered without running (the poison guard, a gone executor).
        var deadLettered = 0
    }

    let state = Mutex(State())

    init(
        queue: PostgresQueue, executors: [String], maxConcurrency: Int?, maxAttempts: Int, park: Bool,
        logger: Logger, onFailure: @escaping @Sendable (String) -> Void
    ) {
        self.maxAttempts = maxAttempts
        self.park = park
        self.queue = queue
        self.executorNames = executors
        self.executorIndex = Dictionary(executors.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        self.maxConcurrency = maxConcurrency ?? 64
        self.maxClaims = maxConcurrency ?? 64
        self.logger = logger
        self.onFailure = onFailure
    }

    func fail(_ message: String) {
        let first = state.withLock { state -> Bool in
            defer { if state.failure == nil { state.failure = message } }
            return state.failure == nil
        }
        if first {
            logger.critical("\(message)", metadata: ["queue": "\(queue.url.redacted)", "schema": "\(queue.schema)"])
            onFailure(message)
        }
    }

    func fail(_ error: PostgresQueueError) { fail(error.message + " (" + error.remedy + ")") }

    func arrived() { state.withLock { $0.generation &+= 1 } }

    // MARK: Targets and tasks as rows

    static func text(_ target: TargetID) -> String {
        switch target {
        case .integer(let value): String(value)
        case .string(let value): value
        }
    }

    /// What the row keeps of a task besides its id, target, executor and priority.
    static func envelope(_ item: TaskItem<PipelineTask>) -> String {
        var writer = JSONObjectWriter()
        writer.add("source", item.payload.source)
        writer.add("seq", item.payload.seq)
        writer.add("payload", item.payload.payload)
        writer.add("raw", item.payload.raw)
        if case .integer = item.targetId { writer.add("integerTarget", 1) }
        return writer.text
    }

    // MARK: Intake

    /// Commits the batches taken so far, in order; whoever comes first commits for the others.
    func drain() async {
        while true {
            let next = state.withLock { state -> (tasks: [PostgresNewTask], ticket: CommitTicket)? in
                if state.draining, state.pending.isEmpty { state.draining = false }
                guard !state.pending.isEmpty else { return nil }
                return state.pending.removeFirst()
            }
            guard let (tasks, ticket) = next else { return }
            if state.withLock({ $0.failure != nil }) {
                ticket.finish(.failed)
                continue
            }
            do {
                _ = try await queue.enqueue(tasks)
                arrived()
                ticket.finish(.committed([:]))
            } catch {
                fail(error)
                ticket.finish(.failed)
            }
        }
    }

    // MARK: The feed

    /// The next claims as tasks; nil when the feed is over (stopped, failed, or the sources are
    /// done and nothing of the queue is ready or running).
    func nextBatch(pipeline: Pipeline) async -> [TaskItem<PipelineTask>]? {
        while true {
            let (host, free, done, over, generation) = state.withLock {
                ($0.host, maxClaims - $0.inFlight.count, $0.sourcesDone, $0.stopped || $0.failure != nil, $0.generation)
            }
            guard !over, let host else { return nil }
            if free > 0 {
                let claims: [PostgresClaim]?
                do {
                    claims = try await queue.claim(host: host, limit: free)
                } catch {
                    fail(error)
                    return nil
                }
                guard let claims else {
                    fail(
                        "this host's lease ended (it was paused or cut off longer than queue.postgres.leaseMs): "
                            + "its targets went to other hosts; restart it")
                    return nil
                }
                if !claims.isEmpty {
                    let items = await tasks(claims, pipeline: pipeline)
                    if !items.isEmpty { return items }
                    continue
                }
            }
            if done, free == maxClaims {
                do {
                    if try await queue.counts().active == 0 { return nil }
                } catch {
                    fail(error)
                    return nil
                }
            }
            // A safety poll (no LISTEN/NOTIFY yet): woken early by this host's own commits.
            for _ in 0..<25 {
                try? await Task.sleep(for: .milliseconds(10))
                if state.withLock({ $0.generation != generation || $0.stopped }) { break }
            }
        }
    }

    /// Claims as the scheduler's tasks. A claim whose executor is gone is dead-lettered; one
    /// during whose attempts hosts died ``HostCrashes/limit`` times (reaped) is not run again (a
    /// task that kills its host must not do so for ever) and ends as `onExhausted` says.
    func tasks(_ claims: [PostgresClaim], pipeline: Pipeline) async -> [TaskItem<PipelineTask>] {
        var items: [TaskItem<PipelineTask>] = []
        var given: [(PostgresFinish, TaskItem<PipelineTask>?)] = []
        for claim in claims {
            guard let executor = claim.executor, let index = executorIndex[executor],
                case .object(let fields) = try? JSONParser.parse(claim.payload)
            else {
                let error = "its executor '\(claim.executor ?? "")' is not in the configuration any more"
                given.append((PostgresFinish(claim, .deadLetter(error: error)), nil))
                continue
            }
            func string(_ key: String) -> String {
                if case .string(let value) = fields[key] { return value }
                return ""
            }
            var seq: UInt64 = 0
            if case .integer(let value) = fields["seq"] { seq = UInt64(clamping: value) }
            let integer = fields["integerTarget"] != nil
            let target: TargetID =
                integer
                ? Int64(claim.targetId).map { .integer($0) } ?? .string(claim.targetId) : .string(claim.targetId)
            let record = PostgresRecord(claim: claim)
            let item = TaskItem(
                targetId: target,
                payload: PipelineTask(
                    source: string("source"), seq: seq, executor: index, payload: string("payload"),
                    raw: string("raw"), log: AttemptLog(), batch: nil, postgres: record),
                priority: claim.priority, id: claim.taskId.isEmpty ? nil : claim.taskId, pool: index + 1)
            if claim.deaths >= HostCrashes.limit {
                let error =
                    "the hosts running it stopped during \(claim.deaths) of its attempts (a crash in the executor?): "
                    + "not run again, so that it cannot stop hosts for ever"
                let outcome: PostgresOutcome = park ? .park(error: error) : .deadLetter(error: error)
                given.append(
                    (
                        PostgresFinish(
                            targetId: claim.targetId, seq: claim.seq, fence: claim.fence, attempt: claim.attempt - 1,
                            outcome: outcome), item
                    ))
                continue
            }
            state.withLock { $0.inFlight[claim.targetId] = record }
            items.append(item)
        }
        if !given.isEmpty {
            let report: PostgresFinishReport
            do {
                report = try await queue.finish(given.map(\.0))
            } catch {
                fail(error)
                return items
            }
            for (finish, item) in given where report.applied.contains(finish) {
                guard case .deadLetter(let error) = finish.outcome else { continue }
                state.withLock { $0.deadLettered += 1 }
                if let item {
                    pipeline.writeResult(item, status: "deadLettered", attempts: finish.attempt, error: error)
                    pipeline.writeDeadLetter(item, error: error, attempts: finish.attempt)
                    pipeline.metrics.of(item).deadLettered.increment()
                } else {
                    pipeline.deadLetters?.write(
                        bytes: deadLetterLine(
                            id: finish.targetId, target: .string(finish.targetId), source: "", seq: UInt64(finish.seq),
                            input: "", error: error, attempts: finish.attempt))
                }
            }
            pipeline.results?.flush()
            pipeline.deadLetters?.flush()
            logger.warning(
                "tasks ended without running",
                metadata: ["tasks": "\(given.count)", "why": "\(given.first.map { $0.0.outcome.description } ?? "")"])
        }
        return items
    }

    // MARK: Outcomes

    /// Records an outcome with its claim's fence; false when it was refused (the claim was
    /// superseded) or the queue failed.
    func finish(_ finish: PostgresFinish) async -> Bool {
        do {
            return try await !queue.finish([finish]).applied.isEmpty
        } catch {
            fail(error)
            return false
        }
    }

    /// The claim is over: its slot is free.
    func ended(_ target: String) {
        state.withLock {
            $0.inFlight[target] = nil
            $0.generation &+= 1
        }
    }

    // MARK: The lease

    /// Renews this host's lease and reaps hosts whose lease ended, every third of the lease.
    func keepLease() async {
        let period = queue.lease / 3
        while (try? await Task.sleep(for: period)) != nil {
            guard let host = state.withLock({ $0.host }) else { return }
            do {
                if try await !queue.renew(host: host) {
                    fail(
                        "this host's lease ended (it was paused or cut off longer than queue.postgres.leaseMs): "
                            + "its targets went to other hosts; restart it")
                    return
                }
                let reaped = try await queue.reap()
                if !reaped.targets.isEmpty {
                    logger.warning(
                        "hosts stopped renewing their lease: their running tasks go back to the head of their targets",
                        metadata: ["hosts": "\(reaped.hosts)", "tasks": "\(reaped.targets.count)"])
                    arrived()
                }
            } catch {
                if Task.isCancelled { return }
                // The next round tries again; a host that cannot renew loses its lease on time.
                logger.warning("cannot renew this host's lease: \(error.message)")
            }
        }
    }
}

extension PostgresOutcome: CustomStringConvertible {
    package var description: String {
        switch self {
        case .succeeded: "succeeded"
        case .retry(_, let error), .park(let error), .deadLetter(let error), .retryHeld(let error): error
        case .release: "released"
        }
    }
}

/// The scheduler's input on the PostgreSQL queue: claimed heads.
struct PostgresFeed: AsyncSequence, Sendable {
    typealias Element = TaskItem<PipelineTask>
    let run: PostgresRun
    let pipeline: Pipeline

    struct AsyncIterator: AsyncIteratorProtocol {
        let run: PostgresRun
        let pipeline: Pipeline
        var buffer: [TaskItem<PipelineTask>] = []
        var index = 0

        mutating func next() async -> TaskItem<PipelineTask>? {
            while index == buffer.count {
                guard let batch = await run.nextBatch(pipeline: pipeline) else { return nil }
                buffer = batch
                index = 0
            }
            defer { index += 1 }
            return buffer[index]
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(run: run, pipeline: pipeline) }
}

extension PostgresRun: PipelineStore {
    // MARK: Sources

    func submit(_ tasks: [TaskItem<PipelineTask>], refused: [NewTask], checkpoint: Checkpoint?) -> AppendTicket {
        if failureMessage != nil { return .done(false) }
        guard !tasks.isEmpty else { return .done(true) }
        let rows = tasks.map { item in
            PostgresNewTask(
                targetId: Self.text(item.targetId), taskId: item.id ?? "",
                executor: executorNames[item.payload.executor],
                priority: item.priority, payload: Self.envelope(item))
        }
        let ticket = CommitTicket()
        state.withLock { $0.pending.append((rows, ticket)) }
        return .perform(ticket, { [self] in await drain() })
    }

    var isDurable: Bool { true }

    var failureMessage: String? { state.withLock { $0.failure } }

    /// No checkpoints yet: a source starts from its beginning on every run.
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

    // MARK: The scheduler's side

    /// Creates or migrates the schema, registers this host and reaps hosts whose lease ended.
    func open(for pipeline: Pipeline) async throws(QueueError) {
        if let spool = pipeline.config.sources.first(where: { $0.kind == .directory }) {
            throw QueueError(
                path: queue.url.redacted,
                message: "the directory source '\(spool.name)' does not run on the PostgreSQL queue yet (preview)",
                remedy: "use a file, stdin, http or interval source, or the SQLite queue")
        }
        do {
            try await queue.prepare()
            let name = ProcessInfo.processInfo.hostName
            let (host, logger) = (queue.leaseMs, logger)
            let (id, reaped) = try await queue.direct("registering this host") { connection in
                try await connection.withTransaction(logger: logger) { connection in
                    let id = try await PostgresQueue.Statements.register(
                        name: name, pid: getpid(), maxConcurrency: maxConcurrency, leaseMs: host, on: connection,
                        logger: logger)
                    let reaped = try await PostgresQueue.Statements.reap(on: connection, logger: logger)
                    return (id, reaped.targets.count)
                }
            }
            state.withLock { $0.host = id }
            logger.info(
                "registered on the PostgreSQL queue",
                metadata: [
                    "host": "\(id)", "queue": "\(queue.url.redacted)", "schema": "\(queue.schema)",
                    "leaseMs": "\(host)",
                ])
            if reaped > 0 {
                logger.warning(
                    "tasks were running on hosts whose lease ended: they go back to the head of their targets",
                    metadata: ["tasks": "\(reaped)"])
            }
        } catch {
            throw QueueError(path: queue.url.redacted, message: error.message, remedy: error.remedy)
        }
    }

    func feed(for pipeline: Pipeline) -> PostgresFeed { PostgresFeed(run: self, pipeline: pipeline) }

    func hooks(for pipeline: Pipeline) -> SchedulerHooks<PipelineTask> {
        let metrics = pipeline.metrics
        return SchedulerHooks(
            attemptStarted: { task, _, wait in
                metrics.of(task).queueWait.record(wait)
                task.payload.postgres?.started.store(true, ordering: .relaxed)
            },
            attemptFinished: { record in pipeline.finished(record, durable: nil, recordedByStore: true) },
            beforeRelease: { [self] record in await pipeline.record(record, postgres: self) },
            history: { task in task.payload.postgres.map { TaskHistory(attempts: max(0, $0.claim.attempt - 1)) } })
    }

    func executeImmediately(_ task: TaskItem<PipelineTask>, context: ExecutionContext, router: PipelineExecutor)
        -> ImmediateOutcome
    {
        router.executeImmediately(task, context: context)
    }

    func execute(_ task: TaskItem<PipelineTask>, context: ExecutionContext, router: PipelineExecutor) async throws {
        try await router.execute(task, context: context)
    }

    func ready(for pipeline: Pipeline, scheduler: Scheduler<RunExecutor<PostgresRun>, ContinuousClock>) async {}

    func services(for pipeline: Pipeline, scheduler: Scheduler<RunExecutor<PostgresRun>, ContinuousClock>)
        -> [(name: String, body: @Sendable () async -> Void)]
    {
        [
            // The pool's connections: stopped after the scheduler (the hooks record through it).
            ("postgres pool", { [queue] in await queue.run() }),
            ("lease", { [self] in await untilShutdown { await self.keepLease() } }),
        ]
    }

    /// Tasks in the queue (waiting or running; not split by state yet).
    func depth() async -> QueueDepth? {
        guard let counts = try? await queue.counts() else { return nil }
        return QueueDepth(byState: ["queued": counts.tasks], oldestQueuedAge: nil)
    }

    // MARK: The end

    func sourcesFinished() {
        state.withLock {
            $0.sourcesDone = true
            $0.generation &+= 1
        }
    }

    func stop() {
        state.withLock {
            $0.stopped = true
            $0.generation &+= 1
        }
    }

    /// Claims not finished go back to their targets (a claim whose attempt never started with its
    /// attempt uncounted), and the host leaves (declared dead at once, so nobody waits for its
    /// lease). Unfinished tasks stay queued for the next run.
    func close(_ summary: RunSummary<PipelineTask>, pipeline: Pipeline, into out: inout Pipeline.Summary) async {
        let (host, left) = state.withLock { state -> (Int64?, [PostgresRecord]) in
            defer { state.inFlight.removeAll() }
            return (state.host, Array(state.inFlight.values))
        }
        out.leftQueued = summary.unfinished.count
        out.parked = summary.parked
        out.deadLettered = state.withLock { $0.deadLettered }
        if let host {
            let logger = self.logger
            let releases = left.map {
                PostgresFinish($0.claim, .release(started: $0.started.load(ordering: .relaxed)))
            }
            let counts = try? await queue.direct("leaving the queue") { connection in
                try await connection.withTransaction(logger: logger) { connection in
                    if !releases.isEmpty {
                        _ = try await PostgresQueue.Statements.finish(releases, on: connection, logger: logger)
                    }
                    try await PostgresQueue.Statements.retire(host: host, on: connection, logger: logger)
                }
                var tasks = 0
                for try await count in try await connection.query("SELECT count(*) FROM th_task", logger: logger)
                    .decode(Int64.self)
                {
                    tasks = Int(count)
                }
                return tasks
            }
            if let counts { out.leftQueued = counts }
        }
        out.queueError = state.withLock { $0.failure }
    }
}

extension Pipeline {
    /// What an attempt leaves on the PostgreSQL queue, as the scheduler decided it: recorded with
    /// its claim's fence, then (when applied) its result line and dead letter, written out at once.
    /// A refused outcome (the claim was superseded: this host lost its lease) writes nothing.
    func record(_ attempt: AttemptRecord<PipelineTask>, postgres run: PostgresRun) async {
        let task = attempt.task
        guard let record = task.payload.postgres else { return }
        let number = attempt.context.attempt
        let message = attempt.error.map { "\($0)" } ?? ""
        let claim = record.claim
        let outcome: PostgresOutcome
        var next = number
        switch attempt.disposition {
        case .succeeded: outcome = .succeeded
        case .retrying:
            outcome = .retryHeld(error: message)
            next = number + 1
        case .parked: outcome = .park(error: message)
        case .deadLettered: outcome = .deadLetter(error: message)
        case .cancelled: outcome = .release(started: record.started.load(ordering: .relaxed))
        }
        let applied = await run.finish(
            PostgresFinish(
                targetId: claim.targetId, seq: claim.seq, fence: claim.fence, attempt: next, outcome: outcome))
        if applied {
            switch attempt.disposition {
            case .succeeded:
                writeResult(task, status: "succeeded", attempts: number, error: nil)
            case .deadLettered:
                writeResult(task, status: "deadLettered", attempts: number, error: message)
                writeDeadLetter(task, error: message, attempts: number)
            default: break
            }
            // At once: a line held in the sink's buffer would be lost with the host (kill -9),
            // its task being final in the queue. What is left is the moment between the commit
            // and this write.
            results?.flush()
            deadLetters?.flush()
        }
        if case .retryHeld = outcome { return }
        run.ended(claim.targetId)
    }
}
