import TaskHostScheduler

/// A target as the operator's tools print it: an integer as its number, a string in quotes.

/// Which dead letters a command acts on: all, some rows, or one target's.
package struct DeadLetterSelection: Sendable {
    package var rows: [Int64] = []
    package var target: TargetID?

    package init(rows: [Int64] = [], target: TargetID? = nil) {
        self.rows = rows
        self.target = target
    }

    fileprivate var clause: (String, [SQLiteValue]) {
        var sql = "state = \(TaskState.dead.rawValue)"
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

/// A dead letter as the tools list it.
package struct StoredDeadLetter: Sendable {
    package var row: Int64
    package var id: String?
    package var targetId: TargetID?
    package var source: String
    package var seq: UInt64
    package var attempts: Int
    package var error: String?
    package var input: String
}

/// The statements of the operator's tools (`taskhost status`, `targets`, `dead-letters`,
/// `enqueue`), behind typed calls.
extension SQLiteDatabase {
    /// Tasks per state.
    package func countsByState() throws -> [TaskState: Int] {
        let statement = try self.statement("SELECT state, count(*) FROM tasks GROUP BY state")
        defer { statement.reset() }
        var counts: [TaskState: Int] = [:]
        while try statement.step() {
            if let state = TaskState(rawValue: statement.int(0)) { counts[state] = Int(statement.int(1)) }
        }
        return counts
    }

    /// Queued tasks whose target is parked.
    package func countQueuedOfParkedTargets() throws -> Int {
        Int(
            try integer(
                """
                SELECT count(*) FROM tasks JOIN targets
                ON targets.target = tasks.target AND targets.target_kind = tasks.target_kind AND targets.parked = 1
                WHERE tasks.state = \(TaskState.queued.rawValue)
                """) ?? 0)
    }

    /// Queued tasks waiting out a backoff at `now` (Unix ms).
    package func countBackingOff(at now: Int64) throws -> Int {
        Int(
            try integer(
                "SELECT count(*) FROM tasks WHERE state = \(TaskState.queued.rawValue) AND not_before > ?",
                [.integer(now)]) ?? 0)
    }

    private func targetNames(_ sql: String, _ bindings: [SQLiteValue]) throws -> [TargetID] {
        let statement = try self.statement(sql)
        defer { statement.reset() }
        try statement.bind(bindings)
        var names: [TargetID] = []
        while try statement.step() {
            if let target = TargetID(kind: statement.int(0), text: statement.text(1)) { names.append(target) }
        }
        return names
    }

    package func busyTargets(limit: Int) throws -> [TargetID] {
        try targetNames(
            "SELECT DISTINCT target_kind, target FROM tasks WHERE state = \(TaskState.running.rawValue) LIMIT ?",
            [.int(limit)])
    }

    package func backedOffTargets(at now: Int64, limit: Int) throws -> [TargetID] {
        try targetNames(
            """
            SELECT DISTINCT target_kind, target FROM tasks
            WHERE state = \(TaskState.queued.rawValue) AND not_before > ? LIMIT ?
            """, [.integer(now), .int(limit)])
    }

    package func parkedTargetNames(limit: Int) throws -> [TargetID] {
        try targetNames("SELECT target_kind, target FROM targets WHERE parked = 1 LIMIT ?", [.int(limit)])
    }

    /// The oldest queued task: its row, target (as the tools print it) and enqueue time (Unix ms).
    package func oldestQueued() throws -> (row: Int64, target: TargetID, enqueuedAt: Int64)? {
        let statement = try self.statement(
            """
            SELECT id, target_kind, target, enqueued_at FROM tasks WHERE state = \(TaskState.queued.rawValue)
            ORDER BY id LIMIT 1
            """)
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        let target = TargetID(kind: statement.int(1), text: statement.text(2)) ?? .string("")
        return (statement.int(0), target, statement.int(3))
    }

    package func fileBytes() throws -> Int64 {
        (try integer("PRAGMA page_count") ?? 0) * (try integer("PRAGMA page_size") ?? 4096)
    }

    // MARK: Commands for a running host

    package func insertCommand(_ verb: TargetVerb, _ target: TargetID) throws -> Int64 {
        try run(
            "INSERT INTO commands(verb, target_kind, target) VALUES(?, ?, ?)",
            [.text(verb.rawValue), .integer(target.storedKind), .text(target.storedText)])
        return lastInsertRowID
    }

    /// The host's answer to a command, once applied (or whatever is recorded, `appliedOnly` false).
    package func commandResult(_ id: Int64, appliedOnly: Bool = true) throws -> TargetCommandOutcome? {
        try text(
            "SELECT result FROM commands WHERE id = ?\(appliedOnly ? " AND applied = 1" : "")", [.integer(id)]
        ).flatMap(TargetCommandOutcome.init)
    }

    /// Takes back a command no host applied yet; false when a host applied it meanwhile.
    package func withdrawCommand(_ id: Int64) throws -> Bool {
        try run("DELETE FROM commands WHERE id = ? AND applied = 0", [.integer(id)]) == 1
    }

    // MARK: Dead letters

    package func deadLetters(_ selection: DeadLetterSelection, limit: Int) throws -> [StoredDeadLetter] {
        let (clause, bindings) = selection.clause
        let statement = try self.statement(
            """
            SELECT id, task_id, target_kind, target, source, seq, attempts, error, raw FROM tasks
            WHERE \(clause) ORDER BY id LIMIT ?
            """)
        defer { statement.reset() }
        try statement.bind(bindings + [.int(limit)])
        var letters: [StoredDeadLetter] = []
        while try statement.step() {
            letters.append(
                StoredDeadLetter(
                    row: statement.int(0), id: statement.text(1),
                    targetId: TargetID(kind: statement.int(2), text: statement.text(3)),
                    source: statement.text(4) ?? "", seq: UInt64(statement.int(5)), attempts: Int(statement.int(6)),
                    error: statement.text(7), input: statement.text(8) ?? ""))
        }
        return letters
    }

    /// Puts dead letters back at the end of their targets' queues with fresh attempts; inputs that
    /// could not be read stay. Returns how many were requeued and how many are unreadable.
    package func requeue(_ selection: DeadLetterSelection, at now: Int64) throws -> (requeued: Int, unreadable: Int) {
        let (clause, bindings) = selection.clause
        let unreadable = try integer(
            "SELECT count(*) FROM tasks WHERE \(clause) AND (target IS NULL OR executor IS NULL)", bindings)
        // The new rows take over the old rows' ids (unique): the old ones give them up first.
        try execute("CREATE TEMP TABLE IF NOT EXISTS requeued(id INTEGER PRIMARY KEY, task_id TEXT)")
        try execute("DELETE FROM temp.requeued")
        try run(
            """
            INSERT INTO temp.requeued(id, task_id) SELECT id, task_id FROM tasks
            WHERE \(clause) AND target IS NOT NULL AND executor IS NOT NULL
            """, bindings)
        try run("UPDATE tasks SET task_id = NULL WHERE id IN (SELECT id FROM temp.requeued)")
        let requeued = try run(
            """
            INSERT INTO tasks(state, source, seq, task_id, target_kind, target, executor, priority, payload, raw,
                batch, enqueued_at)
            SELECT \(TaskState.queued.rawValue), t.source, t.seq, r.task_id, t.target_kind, t.target, t.executor,
                t.priority, t.payload, t.raw, NULL, ?
            FROM tasks t JOIN temp.requeued r ON t.id = r.id ORDER BY t.id
            """, [.integer(now)])
        try run("DELETE FROM tasks WHERE id IN (SELECT id FROM temp.requeued)")
        try execute("DELETE FROM temp.requeued")
        return (requeued, Int(unreadable ?? 0))
    }

    package func purge(_ selection: DeadLetterSelection) throws -> Int {
        let (clause, bindings) = selection.clause
        return try run("DELETE FROM tasks WHERE \(clause)", bindings)
    }
}

/// One task as `taskhost tasks show` prints it.
package struct TaskDetails: Sendable {
    package var row: Int64
    package var id: String?
    package var state: TaskState
    package var source: String
    package var seq: UInt64
    /// nil for an input that could not be read.
    package var target: TargetID?
    package var executor: String?
    package var attempts: Int
    /// Unix ms; nil when not yet.
    package var enqueuedAt: Int64
    package var startedAt: Int64?
    package var finishedAt: Int64?
    package var notBefore: Int64
    package var error: String?
    package var output: String?
    /// The input line (empty once compacted).
    package var input: String

    /// The target's text (an integer's digits), and whether it is an integer.
    package var targetText: String? { target?.storedText }
    package var targetIsInteger: Bool { target?.storedKind == 1 }
}

extension SQLiteDatabase {
    /// The task a producer's id names; or, for `SOURCE-SEQ` (the id the host gives a task that
    /// came without one), that source's task.
    package func taskDetails(id: String) throws -> TaskDetails? {
        let columns = """
            SELECT id, task_id, state, source, seq, target_kind, target, executor, attempts, enqueued_at, started_at,
                finished_at, not_before, error, output, raw FROM tasks
            """
        var statement = try self.statement(columns + " WHERE task_id = ?")
        try statement.bind([.text(id)])
        if try !statement.step() {
            statement.reset()
            guard let dash = id.lastIndex(of: "-"), let seq = Int64(id[id.index(after: dash)...]) else { return nil }
            statement = try self.statement(columns + " WHERE task_id IS NULL AND source = ? AND seq = ?")
            try statement.bind([.text(String(id[..<dash])), .integer(seq)])
            guard try statement.step() else {
                statement.reset()
                return nil
            }
        }
        defer { statement.reset() }
        return TaskDetails(
            row: statement.int(0), id: statement.text(1), state: TaskState(rawValue: statement.int(2)) ?? .queued,
            source: statement.text(3) ?? "", seq: UInt64(max(0, statement.int(4))),
            target: TargetID(kind: statement.int(5), text: statement.text(6)), executor: statement.text(7),
            attempts: Int(statement.int(8)), enqueuedAt: statement.int(9),
            startedAt: statement.isNull(10) ? nil : statement.int(10),
            finishedAt: statement.isNull(11) ? nil : statement.int(11), notBefore: statement.int(12),
            error: statement.text(13), output: statement.text(14), input: statement.text(15) ?? "")
    }
}
