import Logging
import PostgresNIO
import Synchronization

/// A task to enqueue.
package struct PostgresNewTask: Sendable, Equatable {
    package var targetId: String
    package var taskId: String
    package var executor: String?
    package var priority: Int
    /// The task as its input line (JSON).
    package var payload: String

    package init(targetId: String, taskId: String, executor: String? = nil, priority: Int = 0, payload: String) {
        self.targetId = targetId
        self.taskId = taskId
        self.executor = executor
        self.priority = priority
        self.payload = payload
    }
}

/// A claimed head: the target is `running` for this host until a fenced outcome or the reaper.
package struct PostgresClaim: Sendable, Equatable {
    package var targetId: String
    package var seq: Int64
    /// This attempt's number (1 for the first), counted when claimed.
    package var attempt: Int
    /// The claim's fence: every outcome of this attempt must carry it.
    package var fence: Int64
    /// Attempts of this head during which its host died (the reaper gave it back).
    package var deaths: Int = 0
    package var taskId: String
    package var executor: String?
    package var priority: Int
    package var payload: String
}

/// How an attempt ended, as the scheduler decided it.
package enum PostgresOutcome: Sendable, Equatable {
    /// The task is done: the target moves to its next task.
    case succeeded
    /// Another attempt at the same head after `delay` (database clock); followers wait.
    case retry(after: Duration, error: String)
    /// The head failed for good and the target stops on it (`onExhausted: park`).
    case park(error: String)
    /// The head failed for good and goes to the dead letters; the target moves on.
    case deadLetter(error: String)
    /// The host retries the head itself and keeps its claim; the finish's `attempt` is the next
    /// attempt's number, counted now.
    case retryHeld(error: String)
    /// The head goes back unfinished (a graceful stop), at once; `started: false` for a claim
    /// whose attempt never began (its attempt is not counted).
    case release(started: Bool)
}

/// An outcome to record, naming the claim it ends.
package struct PostgresFinish: Sendable, Equatable {
    package var targetId: String
    package var seq: Int64
    package var fence: Int64
    package var attempt: Int
    package var outcome: PostgresOutcome

    package init(_ claim: PostgresClaim, _ outcome: PostgresOutcome) {
        self.init(
            targetId: claim.targetId, seq: claim.seq, fence: claim.fence, attempt: claim.attempt, outcome: outcome)
    }

    package init(targetId: String, seq: Int64, fence: Int64, attempt: Int, outcome: PostgresOutcome) {
        self.targetId = targetId
        self.seq = seq
        self.fence = fence
        self.attempt = attempt
        self.outcome = outcome
    }
}

/// What a batch of outcomes did: the applied ones, and the refused ones whose claim was superseded
/// (the reaper gave the target back, or another host claimed it since): those changed nothing.
package struct PostgresFinishReport: Sendable, Equatable {
    package var applied: [PostgresFinish] = []
    package var stale: [PostgresFinish] = []
}

/// A target the reaper gave back.
package struct PostgresReaped: Sendable, Equatable {
    package var targetId: String
    package var seq: Int64
    /// Attempts the head has used, the interrupted one included.
    package var attempts: Int
    package var fence: Int64
}

/// The shared queue on PostgreSQL: a pool of connections (run it with ``run()``), the schema, and
/// the fenced statements of hosts sharing one database.
///
/// The statements come in two forms: on the pool, each in a transaction of its own (what a host
/// uses), and on a connection the caller holds (``Statements``), so that a test can hold a
/// transaction open at a chosen point and race another connection against it.
package final class PostgresQueue: Sendable {
    package let client: PostgresClient
    package let schema: String
    package let lease: Duration
    package let url: PostgresConnectionURL
    let logger: Logger

    /// - Throws: ``PostgresQueueError`` for a URL that cannot be used.
    package init(url: String, schema: String, lease: Duration, logger: Logger) throws(PostgresQueueError) {
        self.url = try PostgresConnectionURL(url)
        self.schema = schema
        self.lease = lease
        self.logger = logger
        client = PostgresClient(
            configuration: self.url.clientConfiguration(searchPath: schema), backgroundLogger: logger)
    }

    /// The pool's work: run it in a task for as long as the queue is used; cancel it to close.
    package func run() async { await client.run() }

    /// Creates or migrates the schema (see ``PostgresSchema``), on a connection of its own: a
    /// database that cannot be reached is an error here, at once, where the pool would wait for it.
    package func prepare(connectTimeout: Duration = .seconds(10)) async throws(PostgresQueueError) {
        try await direct("preparing the queue's schema", connectTimeout: connectTimeout) { connection in
            try await PostgresSchema.prepare(schema: schema, on: connection, logger: logger)
        }
    }

    /// Runs `body` on a connection of its own, outside the pool (which runs only while its
    /// ``run()`` does): for a host's start and end.
    package func direct<Result: Sendable>(
        _ doing: String, connectTimeout: Duration = .seconds(10),
        _ body: (PostgresConnection) async throws -> Result
    ) async throws(PostgresQueueError) -> Result {
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(
                configuration: url.connectionConfiguration(searchPath: schema, connectTimeout: connectTimeout),
                id: 0, logger: logger)
        } catch {
            var failure = PostgresQueueError(error, doing: "connecting to \(url.redacted)")
            if failure.sqlState == nil {
                failure.remedy =
                    "check that PostgreSQL runs there and accepts this user from this host (queue.postgres.url)"
            }
            throw failure
        }
        do {
            let result = try await body(connection)
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw PostgresQueueError(error, doing: doing)
        }
    }

    /// Tasks in the queue, targets that are ready or running, and parked targets.
    package func counts() async throws(PostgresQueueError) -> (tasks: Int, active: Int, parked: Int) {
        try await transaction("counting the queue's tasks") { [logger] connection in
            for try await (tasks, active, parked) in try await connection.execute(QueueCounts(), logger: logger) {
                return (Int(tasks), Int(active), Int(parked))
            }
            return (0, 0, 0)
        }
    }

    package var leaseMs: Int64 {
        Int64(lease.components.seconds * 1000 + lease.components.attoseconds / 1_000_000_000_000_000)
    }

    /// Runs `body` in a transaction on a pooled connection, within twice the lease (at least 10 s):
    /// a statement that has not answered by then fails (measured: after the server is killed
    /// mid-run, a request of the pool can wait for ever; a host that cannot reach the database for
    /// longer than its lease has lost it anyway).
    func transaction<Result: Sendable>(
        _ doing: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> Result
    ) async throws(PostgresQueueError) -> Result {
        let (client, logger) = (self.client, self.logger)
        do {
            return try await bounded(max(lease * 2, .seconds(10)), doing) {
                try await client.withTransaction(logger: logger) { connection in try await body(connection) }
            }
        } catch {
            throw PostgresQueueError(error, doing: doing)
        }
    }

    // MARK: On the pool

    /// Enqueues `tasks` in one transaction; returns each task's seq in its target, in input order.
    package func enqueue(_ tasks: [PostgresNewTask]) async throws(PostgresQueueError) -> [Int64] {
        guard !tasks.isEmpty else { return [] }
        return try await transaction("enqueueing \(tasks.count) tasks") { [logger] connection in
            try await Statements.enqueue(tasks, on: connection, logger: logger)
        }
    }

    /// Registers this host; returns its id. Its lease starts now on the database's clock.
    package func register(name: String, pid: Int32, maxConcurrency: Int) async throws(PostgresQueueError) -> Int64 {
        try await transaction("registering the host") { [logger, leaseMs] connection in
            try await Statements.register(
                name: name, pid: pid, maxConcurrency: maxConcurrency, leaseMs: leaseMs, on: connection, logger: logger)
        }
    }

    /// Renews the host's lease; false when the host was declared dead (stop, and register again).
    package func renew(host: Int64) async throws(PostgresQueueError) -> Bool {
        try await transaction("renewing the host's lease") { [logger, leaseMs] connection in
            try await Statements.renew(host: host, leaseMs: leaseMs, on: connection, logger: logger)
        }
    }

    /// Claims up to `limit` ready targets for `host` and reads their heads; nil when the host's
    /// lease has ended (it must stop claiming and register again).
    package func claim(host: Int64, limit: Int) async throws(PostgresQueueError) -> [PostgresClaim]? {
        try await transaction("claiming tasks") { [logger] connection in
            try await Statements.claim(host: host, limit: limit, on: connection, logger: logger)
        }
    }

    /// Records outcomes, fenced, in one transaction.
    package func finish(_ outcomes: [PostgresFinish]) async throws(PostgresQueueError) -> PostgresFinishReport {
        try await transaction("recording \(outcomes.count) outcomes") { [logger] connection in
            try await Statements.finish(outcomes, on: connection, logger: logger)
        }
    }

    /// Declares hosts past their lease dead and gives their running targets back.
    package func reap() async throws(PostgresQueueError) -> (hosts: [Int64], targets: [PostgresReaped]) {
        try await transaction("reaping hosts past their lease") { [logger] connection in
            try await Statements.reap(on: connection, logger: logger)
        }
    }

    // MARK: On a connection

    /// The statements on a connection the caller holds; those that run several statements
    /// (``claim(host:limit:on:logger:)``, ``finish(_:on:logger:)``, ``reap(on:logger:)``,
    /// ``enqueue(_:on:logger:)``) must run inside a transaction.
    package enum Statements {
        package static func enqueue(_ tasks: [PostgresNewTask], on connection: PostgresConnection, logger: Logger)
            async throws -> [Int64]
        {
            // Grouped by target and sorted, so that concurrent batches lock target rows in one
            // order and cannot deadlock (and no row is upserted twice in one statement).
            var counts: [String: Int64] = [:]
            for task in tasks { counts[task.targetId, default: 0] += 1 }
            let targets = counts.keys.sorted()
            var tails: [String: Int64] = [:]
            let rows = try await connection.execute(
                EnqueueTargets(targets: targets, counts: targets.map { counts[$0]! }), logger: logger)
            for try await (target, tail) in rows { tails[target] = tail }
            var next: [String: Int64] = [:]
            for target in targets {
                guard let tail = tails[target] else {
                    throw PostgresQueueError(
                        "the enqueue of target '\(target)' returned no row", remedy: "retry; report it if it persists")
                }
                next[target] = tail - counts[target]! + 1
            }
            var seqs: [Int64] = []
            seqs.reserveCapacity(tasks.count)
            for task in tasks {
                let seq = next[task.targetId]!
                next[task.targetId] = seq + 1
                seqs.append(seq)
            }
            try await connection.execute(
                InsertTasks(
                    targets: tasks.map(\.targetId), seqs: seqs, taskIds: tasks.map(\.taskId),
                    executors: tasks.map { $0.executor ?? "" }, priorities: tasks.map { Int64($0.priority) },
                    payloads: tasks.map(\.payload)),
                logger: logger
            ).reduce(()) { _, _ in }
            return seqs
        }

        package static func register(
            name: String, pid: Int32, maxConcurrency: Int, leaseMs: Int64, on connection: PostgresConnection,
            logger: Logger
        ) async throws -> Int64 {
            let rows = try await connection.execute(
                RegisterHost(name: name, pid: pid, maxConcurrency: Int32(clamping: maxConcurrency), leaseMs: leaseMs),
                logger: logger)
            for try await id in rows { return id }
            throw PostgresQueueError("registering the host returned no row", remedy: "retry")
        }

        package static func renew(host: Int64, leaseMs: Int64, on connection: PostgresConnection, logger: Logger)
            async throws -> Bool
        {
            var renewed = false
            for try await _ in try await connection.execute(RenewLease(host: host, leaseMs: leaseMs), logger: logger) {
                renewed = true
            }
            return renewed
        }

        package static func claim(host: Int64, limit: Int, on connection: PostgresConnection, logger: Logger)
            async throws -> [PostgresClaim]?
        {
            var live = false
            for try await _ in try await connection.execute(LockLiveHost(host: host), logger: logger) { live = true }
            guard live else { return nil }
            guard limit > 0 else { return [] }
            var claimed: [(String, Int64, Int32, Int64, Int32)] = []
            for try await row in try await connection.execute(
                ClaimTargets(host: host, limit: Int64(limit)), logger: logger)
            {
                claimed.append(row)
            }
            guard !claimed.isEmpty else { return [] }
            claimed.sort { $0.0 < $1.0 }
            var heads: [String: (String, String?, Int32, String)] = [:]
            for try await (target, _, taskId, executor, priority, payload) in try await connection.execute(
                ReadHeads(targets: claimed.map(\.0), seqs: claimed.map(\.1)), logger: logger)
            {
                heads[target] = (taskId, executor, priority, payload)
            }
            return try claimed.map { target, seq, attempt, fence, deaths in
                guard let (taskId, executor, priority, payload) = heads[target] else {
                    throw PostgresQueueError(
                        "the head \(seq) of target '\(target)' is missing from th_task",
                        remedy: "the queue's tables were changed by hand; report it")
                }
                return PostgresClaim(
                    targetId: target, seq: seq, attempt: Int(attempt), fence: fence, deaths: Int(deaths),
                    taskId: taskId,
                    executor: executor, priority: Int(priority), payload: payload)
            }
        }

        package static func finish(_ outcomes: [PostgresFinish], on connection: PostgresConnection, logger: Logger)
            async throws -> PostgresFinishReport
        {
            var finals: [PostgresFinish] = []
            var retries: [PostgresFinish] = []
            var parks: [PostgresFinish] = []
            var held: [PostgresFinish] = []
            var released: [PostgresFinish] = []
            for outcome in outcomes.sorted(by: { $0.targetId < $1.targetId }) {
                switch outcome.outcome {
                case .succeeded, .deadLetter: finals.append(outcome)
                case .retry: retries.append(outcome)
                case .park: parks.append(outcome)
                case .retryHeld: held.append(outcome)
                case .release: released.append(outcome)
                }
            }
            var applied = Set<Key>()
            if !held.isEmpty {
                let statement = HoldForRetry(
                    targets: held.map(\.targetId), seqs: held.map(\.seq), fences: held.map(\.fence),
                    attempts: held.map { Int64($0.attempt) }, errors: held.map { $0.outcome.error ?? "" })
                for try await (target, seq) in try await connection.execute(statement, logger: logger) {
                    applied.insert(Key(target: target, seq: seq))
                }
            }
            if !released.isEmpty {
                let statement = ReleaseHeads(
                    targets: released.map(\.targetId), seqs: released.map(\.seq), fences: released.map(\.fence),
                    uncount: released.map { if case .release(started: false) = $0.outcome { 1 } else { 0 } })
                for try await (target, seq) in try await connection.execute(statement, logger: logger) {
                    applied.insert(Key(target: target, seq: seq))
                }
            }
            if !finals.isEmpty {
                let statement = FinishHeads(
                    targets: finals.map(\.targetId), seqs: finals.map(\.seq), fences: finals.map(\.fence),
                    dead: finals.map { if case .deadLetter = $0.outcome { true } else { false } },
                    attempts: finals.map { Int64($0.attempt) }, errors: finals.map { $0.outcome.error ?? "" })
                for try await (target, seq) in try await connection.execute(statement, logger: logger) {
                    applied.insert(Key(target: target, seq: seq))
                }
            }
            if !retries.isEmpty {
                let statement = RetryHeads(
                    targets: retries.map(\.targetId), seqs: retries.map(\.seq), fences: retries.map(\.fence),
                    delays: retries.map { $0.outcome.delayMs }, errors: retries.map { $0.outcome.error ?? "" })
                for try await (target, seq) in try await connection.execute(statement, logger: logger) {
                    applied.insert(Key(target: target, seq: seq))
                }
            }
            if !parks.isEmpty {
                let statement = ParkHeads(
                    targets: parks.map(\.targetId), seqs: parks.map(\.seq), fences: parks.map(\.fence),
                    errors: parks.map { $0.outcome.error ?? "" })
                for try await (target, seq) in try await connection.execute(statement, logger: logger) {
                    applied.insert(Key(target: target, seq: seq))
                }
            }
            var report = PostgresFinishReport()
            for outcome in outcomes {
                if applied.contains(Key(target: outcome.targetId, seq: outcome.seq)) {
                    report.applied.append(outcome)
                } else {
                    report.stale.append(outcome)
                    logger.warning(
                        "refused a stale outcome: the claim was superseded (the host lost its lease, or the target was claimed again)",
                        metadata: [
                            "target": "\(outcome.targetId)", "seq": "\(outcome.seq)", "fence": "\(outcome.fence)",
                        ])
                }
            }
            return report
        }

        /// Declares the host dead at once (a graceful exit, after releasing its targets).
        package static func retire(host: Int64, on connection: PostgresConnection, logger: Logger) async throws {
            for try await _ in try await connection.execute(RetireHost(host: host), logger: logger) {}
        }

        package static func reap(on connection: PostgresConnection, logger: Logger) async throws -> (
            hosts: [Int64], targets: [PostgresReaped]
        ) {
            var hosts: [Int64] = []
            for try await (id, name) in try await connection.execute(MarkExpiredHosts(), logger: logger) {
                hosts.append(id)
                logger.warning(
                    "a host's lease ended: its targets go back to the queue", metadata: ["host": "\(id) \(name)"])
            }
            var targets: [PostgresReaped] = []
            for try await (target, seq, attempts, fence) in try await connection.execute(ReapTargets(), logger: logger)
            {
                targets.append(PostgresReaped(targetId: target, seq: seq, attempts: Int(attempts), fence: fence))
            }
            return (hosts, targets)
        }

        struct Key: Hashable {
            var target: String
            var seq: Int64
        }
    }
}

extension PostgresOutcome {
    var error: String? {
        switch self {
        case .succeeded, .release: nil
        case .retry(_, let error), .park(let error), .deadLetter(let error), .retryHeld(let error): error
        }
    }

    var delayMs: Int64 {
        guard case .retry(let delay, _) = self else { return 0 }
        return max(0, Int64(delay.components.seconds * 1000 + delay.components.attoseconds / 1_000_000_000_000_000))
    }
}

/// `body`'s result, or a ``PostgresQueueError`` once `timeout` has passed without one. The caller
/// goes on at the timeout even when `body` does not end (it is cancelled, and left to end).
func bounded<Result: Sendable>(
    _ timeout: Duration, _ doing: String, _ body: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    let once = Once<Result>()
    return try await withCheckedThrowingContinuation { continuation in
        once.slot.withLock { $0 = continuation }
        // A watchdog: the one place where the work may outlive its caller (a request that never
        // answers), so it cannot be a child task.
        let timer = Task {
            try? await Task.sleep(for: timeout)
            guard !Task.isCancelled else { return }
            once.resume(
                with: .failure(
                    PostgresQueueError(
                        "\(doing): the database did not answer within \(timeout)",
                        remedy: "check that PostgreSQL runs and can be reached from this host")))
        }
        Task {
            let result: Swift.Result<Result, any Error>
            do {
                result = .success(try await body())
            } catch {
                result = .failure(error)
            }
            timer.cancel()
            once.resume(with: result)
        }
    }
}

/// A continuation resumed once, by whichever comes first.
final class Once<Result: Sendable>: Sendable {
    let slot = Mutex<CheckedContinuation<Result, any Error>?>(nil)

    func resume(with result: Swift.Result<Result, any Error>) {
        slot.withLock { $0.take() }?.resume(with: result)
    }
}
