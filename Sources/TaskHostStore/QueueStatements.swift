import TaskHostScheduler

/// What an attempt's end leaves in the queue: recorded before the attempt's target moves on.
package enum RecordedOutcome: Sendable {
    /// Final: the task succeeded with this output.
    case succeeded(output: String?)
    /// Queued again at the head of its target, not to start before `notBefore` (Unix ms).
    case retry(notBefore: Int64, error: String)
    /// Queued at the head of its parked target.
    case parked(error: String)
    /// Final: a dead letter.
    case dead(error: String)
    /// Cut off by shutdown: queued again as it was, its attempt counted.
    case cutOff
}

/// The result of an operator's command on a target, shared by the tools and a running host.
package enum TargetCommandOutcome: Sendable, Hashable, CustomStringConvertible {
    case parked
    case released
    case notParked
    /// `drain` acts on parked targets only.
    case drainNeedsPark
    case drained(count: Int)

    package var description: String {
        switch self {
        case .parked: "parked"
        case .released: "released"
        case .notParked: "not parked"
        case .drainNeedsPark: "not parked: park it first"
        case .drained(let count): "drained \(count) queued task\(count == 1 ? "" : "s")"
        }
    }

    /// Reads back what ``description`` wrote (the commands table keeps the text).
    package init?(_ text: String) {
        switch text {
        case "parked": self = .parked
        case "released": self = .released
        case "not parked": self = .notParked
        case "not parked: park it first": self = .drainNeedsPark
        default:
            guard text.hasPrefix("drained "), let count = Int(text.split(separator: " ")[1]) else { return nil }
            self = .drained(count: count)
        }
    }

    /// Whether the command did what it was asked.
    package var succeeded: Bool {
        switch self {
        case .parked, .released, .drained: true
        case .notParked, .drainNeedsPark: false
        }
    }
}

/// An operator's verb on a target.
package enum TargetVerb: String, Sendable, CaseIterable {
    case park, release, drain
}

/// Every statement the host and the tools run on the queue's tasks, behind typed calls. Each
/// runs inside a transaction the caller holds (``DurableQueue/perform(_:)`` or
/// ``DurableQueue/transaction(_:)``).
extension SQLiteDatabase {
    private static let queued = TaskState.queued.rawValue
    private static let running = TaskState.running.rawValue
    private static let succeeded = TaskState.succeeded.rawValue
    private static let dead = TaskState.dead.rawValue

    // MARK: Attempts

    /// Shows a task as running (an attempt that did not finish inline): `status` lists it, and a
    /// crash before its end counts the attempt.
    package func markRunning(_ row: Int64, attempt: Int, at now: Int64) throws {
        try run(
            "UPDATE tasks SET state = \(Self.running), attempts = ?, started_at = ? WHERE id = ?",
            [.int(attempt), .integer(now), .integer(row)])
    }

    /// Records how an attempt ended.
    package func record(_ outcome: RecordedOutcome, row: Int64, attempt: Int, target: TargetID, at now: Int64) throws {
        switch outcome {
        case .succeeded(let output):
            try run(
                """
                UPDATE tasks SET state = \(Self.succeeded), attempts = ?, finished_at = ?, output = ?, error = NULL
                WHERE id = ?
                """, [.int(attempt), .integer(now), .optional(output), .integer(row)])
        case .retry(let notBefore, let error):
            try run(
                "UPDATE tasks SET state = \(Self.queued), attempts = ?, not_before = ?, error = ? WHERE id = ?",
                [.int(attempt), .integer(notBefore), .text(error), .integer(row)])
        case .parked(let error):
            try run(
                "UPDATE tasks SET state = \(Self.queued), attempts = ?, error = ? WHERE id = ?",
                [.int(attempt), .text(error), .integer(row)])
            try setParked(target, true, reason: error)
        case .dead(let error):
            try run(
                "UPDATE tasks SET state = \(Self.dead), attempts = ?, finished_at = ?, error = ? WHERE id = ?",
                [.int(attempt), .integer(now), .text(error), .integer(row)])
        case .cutOff:
            try run(
                "UPDATE tasks SET state = \(Self.queued), attempts = ? WHERE id = ?", [.int(attempt), .integer(row)])
        }
    }

    /// A row that never reached the scheduler (its executor is gone): a dead letter.
    package func recordDead(_ row: Int64, error: String, at now: Int64) throws {
        try run(
            "UPDATE tasks SET state = \(Self.dead), finished_at = ?, error = ? WHERE id = ?",
            [.integer(now), .text(error), .integer(row)])
    }

    // MARK: Recovery

    /// Puts back the tasks a dead host was running, counting each cut-off attempt as a crash:
    /// leased rows, and the attempts the journal names (inline attempts, and attempts whose
    /// outcome was not committed yet). Returns how many were put back, and the parked targets.
    package func recover(cutOff: [RunningJournal.Entry]) throws -> (reclaimed: Int, parked: [TargetID]) {
        var reclaimed = try run(
            "UPDATE tasks SET state = \(Self.queued), crashes = crashes + 1 WHERE state = \(Self.running)")
        for entry in cutOff {
            // Counted once: a crash before the journal is cleared finds the count made.
            reclaimed += try run(
                """
                UPDATE tasks SET attempts = ?, crashes = crashes + 1
                WHERE id = ? AND state = \(Self.queued) AND attempts < ?
                """, [.int(entry.attempt), .integer(entry.row), .int(entry.attempt)])
        }
        return (reclaimed, try parkedTargets())
    }

    package func parkedTargets() throws -> [TargetID] {
        let statement = try self.statement("SELECT target_kind, target FROM targets WHERE parked = 1")
        defer { statement.reset() }
        var parked: [TargetID] = []
        while try statement.step() {
            if let target = TargetID(kind: statement.int(0), text: statement.text(1)) { parked.append(target) }
        }
        return parked
    }

    // MARK: The feed

    /// Queued tasks after `row`, in arrival order.
    package func queued(after row: Int64, limit: Int) throws -> [StoredTask] {
        try tasks(
            where: "state = \(Self.queued) AND id > ? ORDER BY id LIMIT ?", [.integer(row), .int(limit)])
    }

    /// A target's queued tasks, in arrival order, from row `first` through row `last`.
    package func queued(
        _ target: TargetID, from first: Int64 = 0, through last: Int64 = .max, limit: Int = .max
    ) throws -> [StoredTask] {
        try tasks(
            where: """
                target = ? AND target_kind = ? AND state = \(Self.queued) AND id >= ? AND id <= ? ORDER BY id LIMIT ?
                """,
            [
                .text(target.storedText), .integer(target.storedKind), .integer(first), .integer(last),
                .int(min(limit, Int(Int32.max))),
            ])
    }

    /// The tasks a query selects (`condition` follows `WHERE`).
    package func tasks(where condition: String, _ bindings: [SQLiteValue]) throws -> [StoredTask] {
        try DurableQueue.tasks(where: condition, bindings, in: self)
    }

    /// Tasks not final (queued or running).
    package func countOpen() throws -> Int {
        Int(try integer("SELECT count(*) FROM tasks WHERE state IN (\(Self.queued), \(Self.running))") ?? 0)
    }

    // MARK: Operators' commands

    package func isParked(_ target: TargetID) throws -> Bool {
        try integer(
            "SELECT parked FROM targets WHERE target_kind = ? AND target = ?",
            [.integer(target.storedKind), .text(target.storedText)]) == 1
    }

    package func setParked(_ target: TargetID, _ parked: Bool, reason: String?) throws {
        try DurableQueue.setParked(target, parked, reason: reason, in: self)
    }

    /// The queue's part of a command: the target's flag, the head's fresh attempts on release,
    /// the dead letters of a drain (returned, for the dead-letter sink).
    package func apply(_ verb: TargetVerb, _ target: TargetID) throws -> (
        TargetCommandOutcome, drained: [StoredTask]
    ) {
        let parked = try isParked(target)
        switch verb {
        case .park:
            try setParked(target, true, reason: "parked by operator")
            return (.parked, [])
        case .release:
            guard parked else { return (.notParked, []) }
            try setParked(target, false, reason: nil)
            if let head = try queued(target, limit: 1).first {
                try run(
                    "UPDATE tasks SET attempts = 0, crashes = 0, not_before = 0 WHERE id = ?", [.integer(head.row)])
            }
            return (.released, [])
        case .drain:
            guard parked else { return (.drainNeedsPark, []) }
            let rows = try queued(target)
            let now = unixMilliseconds()
            for row in rows {
                try run(
                    """
                    UPDATE tasks SET state = \(Self.dead), finished_at = ?, error = 'drained by operator' WHERE id = ?
                    """, [.integer(now), .integer(row.row)])
            }
            try setParked(target, false, reason: nil)
            return (.drained(count: rows.count), rows)
        }
    }

    /// Commands `taskhost targets` left for the running host, oldest first.
    package func pendingCommands() throws -> [(id: Int64, verb: TargetVerb?, target: TargetID)] {
        let statement = try self.statement(
            "SELECT id, verb, target_kind, target FROM commands WHERE applied = 0 ORDER BY id")
        defer { statement.reset() }
        var commands: [(Int64, TargetVerb?, TargetID)] = []
        while try statement.step() {
            if let target = TargetID(kind: statement.int(2), text: statement.text(3)) {
                commands.append((statement.int(0), TargetVerb(rawValue: statement.text(1) ?? ""), target))
            }
        }
        return commands
    }

    package func answer(command id: Int64, with result: String) throws {
        try run("UPDATE commands SET applied = 1, result = ? WHERE id = ?", [.text(result), .integer(id)])
    }

    // MARK: Upkeep

    /// Deletes succeeded tasks finished at or before `before` (Unix ms) and gives pages back. Those
    /// with a producer's id that finished after `dedupAfter` keep a slim row (their id, state,
    /// attempts, error and times; not their payload, input or output) for the dedup window.
    package func compact(finishedBefore before: Int64, dedupAfter: Int64 = .max) throws -> Int {
        let removed = try run(
            """
            DELETE FROM tasks WHERE state = \(Self.succeeded) AND finished_at <= ?
                AND (task_id IS NULL OR finished_at <= ?)
            """, [.integer(before), .integer(dedupAfter)])
        // Slimmed by moving, not in place: rows shrunk in place would keep their pages (a page each
        // for tasks of a kilobyte or more), and a full queue would stay full.
        let columns = """
            state, source, seq, task_id, target_kind, target, executor, priority, batch, attempts, crashes,
            not_before, enqueued_at, started_at, finished_at, error
            """
        try execute("CREATE TEMP TABLE IF NOT EXISTS slimmed AS SELECT id, \(columns) FROM tasks WHERE 0")
        try run(
            """
            INSERT INTO temp.slimmed SELECT id, \(columns) FROM tasks
            WHERE state = \(Self.succeeded) AND finished_at <= ? AND task_id IS NOT NULL AND raw <> ''
            """, [.integer(before)])
        try run("DELETE FROM tasks WHERE id IN (SELECT id FROM temp.slimmed)")
        try run("INSERT INTO tasks(raw, \(columns)) SELECT '', \(columns) FROM temp.slimmed ORDER BY id")
        try run("DELETE FROM temp.slimmed")
        try execute("PRAGMA incremental_vacuum(2000)")
        return removed
    }

    // MARK: Producers' ids

    /// The task that holds a producer's id, with its state and when it finished (0 when not final).
    package func task(withId id: String) throws -> (row: Int64, state: TaskState, finishedAt: Int64)? {
        let statement = try statement("SELECT id, state, finished_at FROM tasks WHERE task_id = ?")
        defer { statement.reset() }
        try statement.bind([.text(id)])
        guard try statement.step() else { return nil }
        return (statement.int(0), TaskState(rawValue: statement.int(1)) ?? .queued, statement.int(2))
    }

    /// A final task's id after the dedup window: free for a new task.
    package func releaseTaskId(row: Int64) throws {
        try run("UPDATE tasks SET task_id = NULL WHERE id = ?", [.integer(row)])
    }

    // MARK: Sources

    /// The next sequence number of a source (1 for a new one).
    package func nextSequence(of source: String) throws -> UInt64 {
        UInt64(max(1, try integer("SELECT next_seq FROM sources WHERE name = ?", [.text(source)]) ?? 1))
    }

    package func checkpoint(source: String, file: String) throws -> Checkpoint? {
        let statement = try self.statement(
            "SELECT device, inode, offset, complete FROM checkpoints WHERE source = ? AND file = ?")
        defer { statement.reset() }
        try statement.bind([.text(source), .text(file)])
        guard try statement.step() else { return nil }
        return Checkpoint(
            source: source, file: file, device: statement.int(0), inode: statement.int(1), offset: statement.int(2),
            complete: statement.int(3) != 0)
    }

    package func checkpointedFiles(of source: String) throws -> [String] {
        let statement = try self.statement("SELECT file FROM checkpoints WHERE source = ?")
        defer { statement.reset() }
        try statement.bind([.text(source)])
        var files: [String] = []
        while try statement.step() { files.append(statement.text(0) ?? "") }
        return files
    }

    package func deleteCheckpoint(source: String, file: String) throws {
        try run("DELETE FROM checkpoints WHERE source = ? AND file = ?", [.text(source), .text(file)])
    }

    /// A batch file's tasks not final yet, and its dead letters.
    package func batchCounts(source: String, batch: String) throws -> (pending: Int, failed: Int) {
        let pending = try integer(
            "SELECT count(*) FROM tasks WHERE source = ? AND batch = ? AND state IN (\(Self.queued), \(Self.running))",
            [.text(source), .text(batch)])
        let failed = try integer(
            "SELECT count(*) FROM tasks WHERE source = ? AND batch = ? AND state = \(Self.dead)",
            [.text(source), .text(batch)])
        return (Int(pending ?? 0), Int(failed ?? 0))
    }
}
