import Foundation
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

#if canImport(Glibc)
    import Glibc
#endif

/// The operator's view of a pipeline's durable queue: enqueue, status, targets and dead letters.
/// Safe while `taskhost run` works on the same queue: writes are short transactions, and a
/// running host is told (SIGUSR1) to pick up new tasks and apply target commands.
package final class QueueAdmin: Sendable {
    package let config: PipelineConfig
    let queue: DurableQueue

    package init(config: PipelineConfig) throws(ConfigError) {
        self.config = config
        guard let settings = config.queue else {
            throw ConfigError(
                file: config.file, line: config.queueLocation?.line, column: config.queueLocation?.column, key: "queue",
                message: "this pipeline keeps its tasks in memory (queue: memory): there is no queue to operate",
                hint: "remove `queue: memory` to use the durable queue")
        }
        do {
            queue = try DurableQueue(settings: settings, host: false)
        } catch {
            throw ConfigError(error, config: config)
        }
    }

    package var path: String { queue.path }

    /// The pid of the host running on this queue, nil when none is.
    package var hostPID: Int32? { queue.hostPID() }

    /// Wakes a running host: new tasks, or commands to apply.
    func notifyHost() {
        if let pid = hostPID, pid > 0 { kill(pid, SIGUSR1) }
    }

    // MARK: Enqueue

    package struct EnqueueReport: Sendable {
        package var accepted = 0
        /// Input lines (1-based) that could not be read, with the reason; kept as dead letters.
        package var rejected: [(line: Int, reason: String)] = []
    }

    /// Adds tasks (JSON lines) as `source` would have: same routing, same target id path.
    package func enqueue(lines: [String], source name: String?) throws(ConfigError) -> EnqueueReport {
        guard let named = name.map({ name in config.sources.first { $0.name == name } }) ?? config.sources.first else {
            throw ConfigError(
                file: config.file, line: nil, column: nil, key: "sources",
                message: "no source named '\(name ?? "")'",
                hint: "sources: \(config.sources.map(\.name).joined(separator: ", "))")
        }
        // Routed as that source would, recorded as "enqueue:<source>" with a sequence of its own
        // (a running host numbers its source's lines in memory, ahead of its commits).
        var source = named
        source.name = "enqueue:" + named.name
        let decoder = InputDecoder(
            source: source, executors: config.executors.map(\.name), maxTaskBytes: source.maxTaskBytes)
        let executors = config.executors.map(\.name)
        var report = EnqueueReport()
        let sink = try config.deadLetter.map { path throws(ConfigError) in try JSONLinesSink(path: path) }
        do {
            try queue.transaction { db in
                var seq = UInt64(
                    try db.integer("SELECT next_seq FROM sources WHERE name = ?", [.text(source.name)]) ?? 1)
                var rows: [NewTask] = []
                for (index, line) in lines.enumerated()
                where !line.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) {
                    switch decoder.decode(line, seq: seq, batch: nil) {
                    case .success(let item):
                        rows.append(
                            NewTask(
                                source: source.name, seq: seq, taskId: item.id, target: item.targetId,
                                executor: executors[item.payload.executor], priority: item.priority,
                                payload: item.payload.payload, raw: line, batch: nil))
                        report.accepted += 1
                    case .failure(let rejection):
                        rows.append(
                            NewTask(
                                source: source.name, seq: seq, taskId: nil, target: nil, executor: nil, priority: 0,
                                payload: nil, raw: line, batch: nil, rejected: rejection.reason))
                        report.rejected.append((index + 1, rejection.reason))
                        sink?.write(
                            bytes: deadLetterLine(
                                id: nil, target: nil, source: source.name, seq: seq, input: line,
                                error: rejection.reason, attempts: 0))
                    }
                    seq += 1
                }
                try DurableQueue.insert(rows, into: db, now: unixMilliseconds())
            }
        } catch {
            throw ConfigError(error)
        }
        sink?.flush()
        notifyHost()
        return report
    }

    // MARK: Status

    package struct Status: Sendable, Codable {
        package var path: String
        package var hostPID: Int32?
        package var queued = 0
        package var backingOff = 0
        package var running = 0
        package var succeeded = 0
        package var deadLetters = 0
        package var busyTargets: [String] = []
        package var backedOffTargets: [String] = []
        package var parkedTargets: [String] = []
        /// The oldest waiting task: its row, target and age in seconds.
        package var oldestRow: Int64?
        package var oldestTarget: String?
        package var oldestAgeSeconds: Double?
        package var fileBytes: Int64 = 0
    }

    package func status(listLimit: Int = 20) throws(ConfigError) -> Status {
        var status = Status(path: queue.path, hostPID: hostPID)
        let now = unixMilliseconds()
        do {
            try queue.transaction { db in
                let counts = try db.statement("SELECT state, count(*) FROM tasks GROUP BY state")
                while try counts.step() {
                    let count = Int(counts.int(1))
                    switch TaskState(rawValue: counts.int(0)) {
                    case .queued: status.queued = count
                    case .running: status.running = count
                    case .succeeded: status.succeeded = count
                    case .dead: status.deadLetters = count
                    case nil: break
                    }
                }
                status.backingOff = Int(
                    try db.integer("SELECT count(*) FROM tasks WHERE state = 0 AND not_before > ?", [.integer(now)])
                        ?? 0)
                func targets(_ sql: String, _ bindings: [SQLiteValue] = []) throws -> [String] {
                    let statement = try db.statement(sql)
                    try statement.bind(bindings)
                    var names: [String] = []
                    while try statement.step() {
                        let name = statement.text(1) ?? ""
                        names.append(statement.int(0) == 1 ? name : "\"\(name)\"")
                    }
                    return names
                }
                status.busyTargets = try targets(
                    "SELECT DISTINCT target_kind, target FROM tasks WHERE state = 1 LIMIT ?", [.int(listLimit)])
                status.backedOffTargets = try targets(
                    "SELECT DISTINCT target_kind, target FROM tasks WHERE state = 0 AND not_before > ? LIMIT ?",
                    [.integer(now), .int(listLimit)])
                status.parkedTargets = try targets(
                    "SELECT target_kind, target FROM targets WHERE parked = 1 LIMIT ?", [.int(listLimit)])
                let oldest = try db.statement(
                    "SELECT id, target_kind, target, enqueued_at FROM tasks WHERE state = 0 ORDER BY id LIMIT 1")
                if try oldest.step() {
                    status.oldestRow = oldest.int(0)
                    let name = oldest.text(2) ?? ""
                    status.oldestTarget = oldest.int(1) == 1 ? name : "\"\(name)\""
                    status.oldestAgeSeconds = Double(now - oldest.int(3)) / 1000
                }
                oldest.reset()
                status.fileBytes =
                    (try db.integer("PRAGMA page_count") ?? 0) * (try db.integer("PRAGMA page_size") ?? 4096)
            }
        } catch {
            throw ConfigError(error)
        }
        return status
    }

    // MARK: Targets

    /// What a target command did, and who applied it.
    package struct TargetCommandReport: Sendable, CustomStringConvertible {
        /// nil when the running host did not answer in time (nothing was done).
        package var outcome: TargetCommandOutcome?
        /// The running host that applied it (-1: one whose pid was not written yet), or nil.
        package var appliedBy: Int32?

        package var description: String {
            guard let outcome else { return "the running host did not answer within 10 s: nothing was done" }
            guard let pid = appliedBy else { return outcome.description }
            return "\(outcome) (applied by the running host\(pid > 0 ? ", pid \(pid)" : ""))"
        }

        /// Whether the command did what it was asked: the exit code's source.
        package var succeeded: Bool { outcome?.succeeded ?? false }
    }

    /// A target id as typed: an integer when it reads as one and the queue knows it as one.
    func target(_ text: String) throws -> TargetID {
        guard let number = Int64(text) else { return .string(text) }
        let known = try queue.transaction { db in
            try db.integer("SELECT count(*) FROM tasks WHERE target_kind = 0 AND target = ? LIMIT 1", [.text(text)])
        }
        return (known ?? 0) > 0 ? .string(text) : .integer(number)
    }

    /// Parks, releases or drains a target. With a host running, the host applies it (to the
    /// tasks it holds too) and answers; otherwise it is applied to the queue here.
    package func target(_ verb: TargetVerb, _ text: String) throws(ConfigError) -> TargetCommandReport {
        do {
            let target = try self.target(text)
            guard let pid = hostPID else { return TargetCommandReport(outcome: try applyOffline(verb, target)) }
            // -1: a host holds the lock but has not written its pid yet; it applies pending
            // commands when it starts.
            let id = try queue.transaction { db -> Int64 in
                try db.run(
                    "INSERT INTO commands(verb, target_kind, target) VALUES(?, ?, ?)",
                    [.text(verb.rawValue), .integer(target.storedKind), .text(target.storedText)])
                return db.lastInsertRowID
            }
            if pid > 0 { kill(pid, SIGUSR1) }
            for attempt in 0..<200 {
                usleep(50_000)
                let result = try queue.transaction { db in
                    try db.text("SELECT result FROM commands WHERE id = ? AND applied = 1", [.integer(id)])
                }
                if let result { return TargetCommandReport(outcome: TargetCommandOutcome(result), appliedBy: pid) }
                if attempt % 20 == 19, let pid = hostPID, pid > 0 { kill(pid, SIGUSR1) }
                if hostPID == nil, try withdraw(id) {
                    // The host stopped before applying it: apply it here.
                    return TargetCommandReport(outcome: try applyOffline(verb, target))
                }
            }
            if try withdraw(id) { return TargetCommandReport(outcome: nil) }
            let result = try queue.transaction { db in
                try db.text("SELECT result FROM commands WHERE id = ?", [.integer(id)])
            }
            return TargetCommandReport(outcome: result.flatMap(TargetCommandOutcome.init), appliedBy: pid)
        } catch {
            throw wrap(error)
        }
    }

    /// Takes back a command no host applied yet; false when a host applied it meanwhile.
    private func withdraw(_ id: Int64) throws -> Bool {
        try queue.transaction { db in
            try db.run("DELETE FROM commands WHERE id = ? AND applied = 0", [.integer(id)]) == 1
        }
    }

    /// A command applied to the queue itself, with no host running: the same statements a running
    /// host applies.
    private func applyOffline(_ verb: TargetVerb, _ target: TargetID) throws -> TargetCommandOutcome {
        let sink = try config.deadLetter.map { path throws(ConfigError) in try JSONLinesSink(path: path) }
        let (outcome, drained) = try queue.transaction { db in try db.apply(verb, target) }
        for row in drained { sink?.write(bytes: deadLetterLine(row, error: "drained by operator")) }
        sink?.flush()
        return outcome
    }

    // MARK: Dead letters

    package struct DeadLetter: Sendable, Codable {
        package var row: Int64
        package var id: String?
        package var targetId: String?
        package var source: String
        package var seq: UInt64
        package var attempts: Int
        package var error: String?
        package var input: String
    }

    /// Which dead letters a command acts on: all, some rows, or one target's.
    package struct Selection: Sendable {
        package var rows: [Int64] = []
        package var target: String?
        package init(rows: [Int64] = [], target: String? = nil) {
            self.rows = rows
            self.target = target
        }

        func clause(_ target: TargetID?) -> (String, [SQLiteValue]) {
            var sql = "state = 3"
            var bindings: [SQLiteValue] = []
            if !rows.isEmpty {
                sql += " AND id IN (\(rows.map { _ in "?" }.joined(separator: ", ")))"
                bindings += rows.map { .integer($0) }
            }
            if let target {
                sql += " AND target_kind = ? AND target = ?"
                bindings += [.integer(target.storedKind), .text(target.storedText)]
            }
            return (sql, bindings)
        }
    }

    package func deadLetters(_ selection: Selection = Selection(), limit: Int = 1000) throws(ConfigError)
        -> [DeadLetter]
    {
        do {
            let target = try selection.target.map { try self.target($0) }
            return try queue.transaction { db in
                let (clause, bindings) = selection.clause(target)
                let statement = try db.statement(
                    "SELECT id, task_id, target_kind, target, source, seq, attempts, error, raw FROM tasks WHERE \(clause) ORDER BY id LIMIT ?"
                )
                try statement.bind(bindings + [.int(limit)])
                var letters: [DeadLetter] = []
                while try statement.step() {
                    letters.append(
                        DeadLetter(
                            row: statement.int(0), id: statement.text(1), targetId: statement.text(3),
                            source: statement.text(4) ?? "", seq: UInt64(statement.int(5)),
                            attempts: Int(statement.int(6)), error: statement.text(7), input: statement.text(8) ?? ""))
                }
                return letters
            }
        } catch {
            throw wrap(error)
        }
    }

    /// Puts dead letters back at the end of their targets' queues with fresh attempts. Inputs
    /// that could not be read are left (they would fail again): fix them and enqueue them.
    package func requeue(_ selection: Selection) throws(ConfigError) -> (requeued: Int, unreadable: Int) {
        do {
            let target = try selection.target.map { try self.target($0) }
            let result = try queue.transaction { db -> (Int, Int) in
                let (clause, bindings) = selection.clause(target)
                let unreadable = try db.integer(
                    "SELECT count(*) FROM tasks WHERE \(clause) AND (target IS NULL OR executor IS NULL)", bindings)
                let requeued = try db.run(
                    """
                    INSERT INTO tasks(state, source, seq, task_id, target_kind, target, executor, priority, payload, raw,
                        batch, enqueued_at)
                    SELECT 0, source, seq, task_id, target_kind, target, executor, priority, payload, raw, NULL, ?
                    FROM tasks WHERE \(clause) AND target IS NOT NULL AND executor IS NOT NULL ORDER BY id
                    """, [.integer(unixMilliseconds())] + bindings)
                try db.run(
                    "DELETE FROM tasks WHERE \(clause) AND target IS NOT NULL AND executor IS NOT NULL", bindings)
                return (requeued, Int(unreadable ?? 0))
            }
            notifyHost()
            return result
        } catch {
            throw wrap(error)
        }
    }

    /// Deletes dead letters for good.
    package func purge(_ selection: Selection) throws(ConfigError) -> Int {
        do {
            let target = try selection.target.map { try self.target($0) }
            return try queue.transaction { db in
                let (clause, bindings) = selection.clause(target)
                return try db.run("DELETE FROM tasks WHERE \(clause)", bindings)
            }
        } catch {
            throw wrap(error)
        }
    }

    private func wrap(_ error: any Error) -> ConfigError {
        if let error = error as? ConfigError { return error }
        return ConfigError(QueueError(path: queue.path, error))
    }
}

/// A dead-letter line: the task (id and target, absent for an input that could not be read),
/// where it came from, its input as JSON (or as a string when it is not JSON), why, and after how
/// many attempts.
func deadLetterLine(
    id: String?, target: TargetID?, source: String, seq: UInt64, input: String, error: String, attempts: Int
) -> [UInt8] {
    var letter = JSONObjectWriter()
    if let target {
        letter.add("id", id)
        switch target {
        case .integer(let value): letter.add("targetId", value)
        case .string(let value): letter.add("targetId", value as String?)
        }
    }
    letter.add("source", source)
    letter.add("seq", seq)
    if isJSON(input) { letter.add("input", raw: input) } else { letter.add("input", input) }
    letter.add("error", error)
    letter.add("attempts", attempts)
    return letter.finished
}

/// A dead-letter line for a row the scheduler never held.
func deadLetterLine(_ stored: StoredTask, error: String) -> [UInt8] {
    deadLetterLine(
        id: stored.taskId, target: stored.target, source: stored.source, seq: stored.seq, input: stored.raw,
        error: error, attempts: stored.attempts)
}

func isJSON(_ text: String) -> Bool { (try? JSONParser.parse(text)) != nil }
