import CSQLite
import Dispatch
import Foundation
import Synchronization
import TaskHostScheduler

#if canImport(Glibc)
    import Glibc
#endif

/// Where and how a pipeline's durable queue is kept (`queue:` in the configuration).
package struct QueueSettings: Sendable {
    /// When a commit is on disk.
    package enum Synchronous: String, Sendable, CaseIterable {
        /// A committed task survives a crash of the host (`kill -9`); the last commits before a
        /// power loss or kernel crash may be lost (SQLite WAL with `synchronous=NORMAL`).
        case normal
        /// A committed task also survives a power loss: every group commit waits for fsync.
        case full
    }

    /// The SQLite file.
    package var path: String
    package var synchronous: Synchronous = .normal
    /// Finished tasks stay this long (for `status` and inspection), then are deleted.
    package var retainFinished: Duration = .seconds(300)
    /// The largest the file may grow. Intake stops a little below it (``DurableQueue/intakeReserve``
    /// is kept for the outcomes of running tasks): sources are refused or paused until finished
    /// tasks are compacted.
    package var maxSizeMB: Int?
    /// How long a producer's task `id` stays taken after its task is final: a task with the same id
    /// is answered as a duplicate, not queued again. While a task is not final its id is always
    /// taken.
    package var dedupWindow: Duration = .seconds(86_400)

    package init(path: String) { self.path = path }

    /// The default: `.taskhost/<config name>/queue.db` beside the configuration file.
    package static func defaultPath(forConfig file: String) -> String {
        let url = URL(fileURLWithPath: file)
        let name = url.deletingPathExtension().lastPathComponent
        let folder = url.deletingLastPathComponent().path
        let relative = (file as NSString).deletingLastPathComponent
        let base = relative.isEmpty ? "." : (file.hasPrefix("/") ? folder : relative)
        return base + "/.taskhost/" + name + "/queue.db"
    }
}

/// A queue that cannot be used: it names the file and says what to do.
package struct QueueError: Error, CustomStringConvertible, Sendable {
    package var path: String
    package var message: String
    package var remedy: String

    package var description: String { "\(path): \(message)\n  \(remedy)" }

    /// The queue (or its disk) is full: not fatal for intake, which is refused or paused until
    /// space returns.
    package var isFull = false

    package init(path: String, message: String, remedy: String) {
        self.path = path
        self.message = message
        self.remedy = remedy
    }

    /// Any error of a transaction: SQLite's mapped to its remedy, others as they are.
    package init(path: String, _ error: any Error) {
        if let error = error as? QueueError {
            self = error
        } else if let error = error as? SQLiteError {
            self.init(path: path, error)
        } else {
            self.init(path: path, message: "\(error)", remedy: "check the queue file")
        }
    }

    package init(path: String, _ error: SQLiteError) {
        self.path = path
        if error.isFull {
            isFull = true
            message = "the queue is full (the disk or queue.maxSizeMB): \(error.message); intake stopped"
            remedy = "free disk space or raise queue.maxSizeMB, then run again; every committed task is kept"
        } else if error.isCorrupt {
            message = "the queue file is corrupted: \(error.message); it was left unchanged"
            remedy =
                "restore it from a backup, or move it away to start with an empty queue; its tasks would be lost"
        } else if error.isReadOnly {
            message = "cannot write the queue file: \(error.message)"
            remedy = "make the file and its folder writable by this user, or set queue.path to a writable place"
        } else if error.isBusy {
            message = "the queue is locked by another process: \(error.message)"
            remedy = "try again; if it persists, check which process holds the file"
        } else {
            message = "SQLite failed: \(error.description)"
            remedy = "check the file and its folder, then run again"
        }
    }
}

/// The states of a task row.
package enum TaskState: Int64, Sendable {
    case queued = 0
    case running = 1
    case succeeded = 2
    case dead = 3

    /// The name operators see (as in the results file's `status`).
    package var name: String {
        switch self {
        case .queued: "queued"
        case .running: "running"
        case .succeeded: "succeeded"
        case .dead: "deadLettered"
        }
    }

    package var isFinal: Bool { self == .succeeded || self == .dead }
}

/// A task already in the queue under the id a new task brings: the new one is a duplicate.
package struct ExistingTask: Sendable, Equatable {
    package var row: Int64
    package var state: TaskState

    package init(row: Int64, state: TaskState) {
        self.row = row
        self.state = state
    }
}

/// A task as a source hands it to the queue.
package struct NewTask: Sendable {
    package var source: String
    package var seq: UInt64
    package var taskId: String?
    package var target: TargetID?
    package var executor: String?
    package var priority: Int
    package var payload: String?
    package var raw: String
    package var batch: String?
    /// Set for an input that could not be read: stored as a dead letter with this reason.
    package var rejected: String?

    package init(
        source: String, seq: UInt64, taskId: String?, target: TargetID?, executor: String?, priority: Int,
        payload: String?, raw: String, batch: String?, rejected: String? = nil
    ) {
        self.source = source
        self.seq = seq
        self.taskId = taskId
        self.target = target
        self.executor = executor
        self.priority = priority
        self.payload = payload
        self.raw = raw
        self.batch = batch
        self.rejected = rejected
    }
}

/// A queued task as the queue gives it back.
package struct StoredTask: Sendable {
    package var row: Int64
    package var source: String
    package var seq: UInt64
    package var taskId: String?
    package var target: TargetID
    package var executor: String
    package var priority: Int
    package var payload: String
    package var raw: String
    package var batch: String?
    package var attempts: Int
    /// Unix milliseconds before which the task must not run (its backoff), 0 for none.
    package var notBefore: Int64
    /// Attempts during which the host died (see ``HostCrashes``).
    package var crashes: Int

    package init(
        row: Int64, source: String, seq: UInt64, taskId: String?, target: TargetID, executor: String, priority: Int,
        payload: String, raw: String, batch: String?, attempts: Int, notBefore: Int64, crashes: Int
    ) {
        self.row = row
        self.source = source
        self.seq = seq
        self.taskId = taskId
        self.target = target
        self.executor = executor
        self.priority = priority
        self.payload = payload
        self.raw = raw
        self.batch = batch
        self.attempts = attempts
        self.notBefore = notBefore
        self.crashes = crashes
    }
}

/// How far a file source has read: the byte after the last committed line.
package struct Checkpoint: Sendable {
    package var source: String
    package var file: String
    package var device: Int64
    package var inode: Int64
    package var offset: Int64
    package var complete: Bool

    package init(source: String, file: String, device: Int64, inode: Int64, offset: Int64, complete: Bool) {
        self.source = source
        self.file = file
        self.device = device
        self.inode = inode
        self.offset = offset
        self.complete = complete
    }
}

extension TargetID {
    package var storedKind: Int64 {
        if case .integer = self { return 1 }
        return 0
    }
    package var storedText: String { description }

    package init?(kind: Int64, text: String?) {
        guard let text else { return nil }
        if kind == 1, let value = Int64(text) {
            self = .integer(value)
        } else {
            self = .string(text)
        }
    }
}

package func unixMilliseconds() -> Int64 { unixNanoseconds() / 1_000_000 }

/// The embedded durable queue: one SQLite file in WAL mode. Every write goes through one serial
/// queue that commits whatever accumulated while the previous commit ran (group commit): a
/// durable task costs a row, not a disk sync.
package final class DurableQueue: @unchecked Sendable {
    package let path: String
    package let settings: QueueSettings
    /// Used only on `serial` (and in `init`).
    private let db: SQLiteDatabase
    private let serial = DispatchQueue(label: "taskhost.queue")
    private let pending = Mutex(Pending())
    /// Called on the commit thread just before each commit: flushes the sinks, so that a line
    /// about a task is written before the task's new state is committed. Held in a class: a
    /// closure stored as a `Mutex`'s value itself is reabstracted on every `withLock { $0 }` and
    /// written back wrapped in two more thunks, so the call chain grew by two frames per commit
    /// (quadratic; 6% of a 100,000-task run's CPU, and a deep stack on long runs).
    private let beforeCommit = Mutex<CommitHook?>(nil)

    private final class CommitHook: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// Sets what runs on the commit thread just before each commit (see `beforeCommit`).
    package func setBeforeCommit(_ body: @escaping @Sendable () -> Void) {
        let hook = CommitHook(body)
        beforeCommit.withLock { $0 = hook }
    }
    /// The host's lock (`flock` on `queue.db.lock`), held for the life of a run.
    private var lockDescriptor: Int32 = -1
    /// The host's journal of running attempts (`queue.db.running`); nil for the operator's tools.
    package private(set) var running: RunningJournal?

    /// A write and its completion; both run on the commit thread only.
    package struct Op: @unchecked Sendable {
        package var body: (SQLiteDatabase) throws -> Void
        package var done: ((QueueError?) -> Void)?
        /// An append of a source: refused alone (rolled back to its savepoint) when the queue is
        /// full, instead of failing the commit and the run.
        package var refusable = false
    }

    package struct Pending {
        package var ops: [Op] = []
        package var scheduled = false
        package var failure: QueueError?
    }

    package static let schemaVersion: Int64 = 3

    /// Opens (creating it and its folder if needed) and checks the queue.
    /// - Parameter host: take the host lock; fails when another host runs on this queue.
    package init(settings: QueueSettings, host: Bool) throws(QueueError) {
        path = settings.path
        self.settings = settings
        let folder = (path as NSString).deletingLastPathComponent
        let manager = FileManager.default
        if !folder.isEmpty, !manager.fileExists(atPath: folder) {
            do {
                try manager.createDirectory(atPath: folder, withIntermediateDirectories: true)
            } catch {
                throw QueueError(
                    path: path, message: "cannot create the state folder \(folder): \(error.localizedDescription)",
                    remedy: "make its parent writable, or set queue.path to a writable place")
            }
        }
        if manager.fileExists(atPath: path), access(path, W_OK) != 0 {
            throw QueueError(
                path: path, message: "cannot write the queue file: \(String(cString: strerror(errno)))",
                remedy: "make the file and its folder writable by this user, or set queue.path to a writable place")
        }
        let path = self.path
        do {
            db = try SQLiteDatabase(path: path)
        } catch {
            throw QueueError(path: path, error)
        }
        do {
            try db.execute("PRAGMA busy_timeout = 10000")
            // Reading the header: a file that is not a database fails here.
            let version = try db.integer("PRAGMA user_version") ?? 0
            if version > Self.schemaVersion {
                throw QueueError(
                    path: path,
                    message:
                        "the queue was written by a newer taskhost (schema \(version), this one knows \(Self.schemaVersion))",
                    remedy: "run it with that newer taskhost, or set queue.path to a new file")
            }
            if let check = try db.text("PRAGMA quick_check"), check != "ok" {
                throw QueueError(
                    path: path, message: "the queue file is corrupted: \(check); it was left unchanged",
                    remedy:
                        "restore it from a backup, or move it away to start with an empty queue; its tasks would be lost"
                )
            }
            if version == 0 {
                try db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            }
            _ = try db.text("PRAGMA journal_mode = WAL")
            try db.execute("PRAGMA synchronous = \(settings.synchronous == .full ? "FULL" : "NORMAL")")
            try db.execute("PRAGMA cache_size = -65536")
            if let megabytes = settings.maxSizeMB {
                let pageSize = try db.integer("PRAGMA page_size") ?? 4096
                let pages = max(64, Int64(megabytes) * 1_048_576 / pageSize)
                _ = try db.integer("PRAGMA max_page_count = \(pages)")
                pageLimits = (intake: pages - Self.intakeReserve(pages), all: pages)
            }
            if version == 0 { try createSchema() }
            if version == 1 {
                // Schema 2 counts the attempts during which the host died apart from the others.
                try db.execute(
                    """
                    BEGIN IMMEDIATE;
                    ALTER TABLE tasks ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;
                    PRAGMA user_version = 2;
                    COMMIT;
                    """)
            }
            if version == 1 || version == 2 { try migrateToUniqueIds() }
        } catch let error as QueueError {
            throw error
        } catch let error as SQLiteError {
            throw QueueError(path: path, error)
        } catch {
            throw QueueError(path: path, message: "\(error)", remedy: "check the file")
        }
        if host {
            try takeHostLock()
            running = try RunningJournal(path: path + ".running")
        }
    }

    deinit {
        if lockDescriptor >= 0 { close(lockDescriptor) }
    }

    private func createSchema() throws(SQLiteError) {
        try db.execute(
            """
            BEGIN IMMEDIATE;
            CREATE TABLE IF NOT EXISTS tasks(
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                state INTEGER NOT NULL,
                source TEXT NOT NULL,
                seq INTEGER NOT NULL,
                task_id TEXT,
                target_kind INTEGER NOT NULL DEFAULT 0,
                target TEXT,
                executor TEXT,
                priority INTEGER NOT NULL DEFAULT 0,
                payload TEXT,
                raw TEXT NOT NULL,
                batch TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                crashes INTEGER NOT NULL DEFAULT 0,
                not_before INTEGER NOT NULL DEFAULT 0,
                enqueued_at INTEGER NOT NULL,
                started_at INTEGER,
                finished_at INTEGER,
                error TEXT,
                output TEXT);
            -- The feed reads queued rows in arrival order; a row leaves this index when it starts.
            CREATE INDEX IF NOT EXISTS tasks_queued ON tasks(id) WHERE state = 0;
            CREATE INDEX IF NOT EXISTS tasks_by_target ON tasks(target, target_kind, id);
            -- A producer's id names one task: a task brought again with it is a duplicate.
            CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_task_id ON tasks(task_id) WHERE task_id IS NOT NULL;
            CREATE TABLE IF NOT EXISTS targets(
                target_kind INTEGER NOT NULL, target TEXT NOT NULL, parked INTEGER NOT NULL, reason TEXT,
                PRIMARY KEY(target, target_kind));
            CREATE TABLE IF NOT EXISTS sources(name TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS checkpoints(
                source TEXT NOT NULL, file TEXT NOT NULL, device INTEGER NOT NULL, inode INTEGER NOT NULL,
                offset INTEGER NOT NULL, complete INTEGER NOT NULL, PRIMARY KEY(source, file));
            CREATE TABLE IF NOT EXISTS commands(
                id INTEGER PRIMARY KEY AUTOINCREMENT, verb TEXT NOT NULL, target_kind INTEGER NOT NULL,
                target TEXT NOT NULL, applied INTEGER NOT NULL DEFAULT 0, result TEXT);
            PRAGMA user_version = \(Self.schemaVersion);
            COMMIT;
            """)
    }

    /// Schema 3: a producer's id is unique among tasks (a partial unique index). Of ids that an
    /// earlier taskhost queued twice, the newest task keeps it; the older ones lose it.
    private func migrateToUniqueIds() throws(SQLiteError) {
        try db.execute(
            """
            BEGIN IMMEDIATE;
            UPDATE tasks SET task_id = NULL WHERE task_id IS NOT NULL AND id NOT IN
                (SELECT max(id) FROM tasks WHERE task_id IS NOT NULL GROUP BY task_id);
            CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_task_id ON tasks(task_id) WHERE task_id IS NOT NULL;
            PRAGMA user_version = 3;
            COMMIT;
            """)
    }

    // MARK: Space

    /// `max_page_count` for a source's appends and for everything else (nil: no maxSizeMB). The
    /// appends stop ``intakeReserve(_:)`` pages short of the limit, so that the outcomes of the
    /// tasks already queued can still be recorded when intake is refused.
    private var pageLimits: (intake: Int64, all: Int64)?

    /// The pages kept for outcomes: an eighth of the limit.
    package static func intakeReserve(_ pages: Int64) -> Int64 { max(8, pages / 8) }

    private func limitPages(forIntake intake: Bool) {
        guard let pageLimits else { return }
        _ = try? db.integer("PRAGMA max_page_count = \(intake ? pageLimits.intake : pageLimits.all)")
    }

    // MARK: The host lock

    package var lockPath: String { path + ".lock" }

    private func takeHostLock() throws(QueueError) {
        let descriptor = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw QueueError(
                path: lockPath, message: "cannot open the lock file: \(String(cString: strerror(errno)))",
                remedy: "make the state folder writable")
        }
        if flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            close(descriptor)
            let pid = hostPID().map { " (pid \($0))" } ?? ""
            throw QueueError(
                path: path, message: "another taskhost\(pid) is running on this queue",
                remedy: "stop it first, or give this pipeline its own queue.path")
        }
        // The tools wake a host with SIGUSR1 as soon as its pid is in the lock file: the
        // executable handles (or ignores) it from its start.
        ftruncate(descriptor, 0)
        let text = "\(getpid())\n"
        _ = text.withCString { write(descriptor, $0, strlen($0)) }
        lockDescriptor = descriptor
    }

    /// The pid of the host running on this queue, or nil when none is.
    package func hostPID() -> Int32? {
        let descriptor = open(lockPath, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        if flock(descriptor, LOCK_SH | LOCK_NB) == 0 {
            flock(descriptor, LOCK_UN)
            return nil
        }
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = read(descriptor, &buffer, 31)
        guard count > 0 else { return -1 }
        return Int32(String(decoding: buffer[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            ?? -1
    }

    // MARK: Group commit

    /// Queues a write; `done` runs on the commit thread once it is committed (nil) or failed.
    /// - Parameter refusable: a source's append: refused alone (`done` gets an error whose
    ///   ``QueueError/isFull`` is set) when the queue is full, the rest of the commit goes on.
    package func submit(
        _ body: @escaping (SQLiteDatabase) throws -> Void, refusable: Bool = false,
        done: ((QueueError?) -> Void)? = nil
    ) {
        let (schedule, failure) = pending.withLock { pending -> (Bool, QueueError?) in
            if let failure = pending.failure { return (false, failure) }
            pending.ops.append(Op(body: body, done: done, refusable: refusable))
            defer { pending.scheduled = true }
            return (!pending.scheduled, nil)
        }
        if let failure {
            done?(failure)
            return
        }
        if schedule { serial.async { self.commitLoop() } }
    }

    /// Runs `body` inside the next group commit and returns its result once committed.
    @inlinable
    @discardableResult
    package func perform<T: Sendable>(_ body: @escaping (SQLiteDatabase) throws -> T) async throws(QueueError) -> T {
        let result: Result<T, QueueError> = await withCheckedContinuation { continuation in
            nonisolated(unsafe) var value: T?
            submit(
                { db in value = try body(db) },
                done: { error in
                    if let error {
                        continuation.resume(returning: .failure(error))
                    } else {
                        continuation.resume(returning: .success(value!))
                    }
                })
        }
        return try result.get()
    }

    private func commitLoop() {
        while true {
            let ops = pending.withLock { pending -> [Op] in
                let ops = pending.ops
                pending.ops.removeAll(keepingCapacity: true)
                if ops.isEmpty { pending.scheduled = false }
                return ops
            }
            if ops.isEmpty { return }
            let (failure, refused) = commit(ops)
            for (index, op) in ops.enumerated() { op.done?(refused[index] ?? failure) }
        }
    }

    /// Commits `ops` in one transaction. A source's append that does not fit (the queue or the
    /// disk full) is refused alone: rolled back to its savepoint, or, when SQLite rolled back the
    /// whole transaction (or the commit itself failed), the others are committed again without it.
    /// Returns the commit's failure and the refused appends' errors, by index.
    private func commit(_ ops: [Op]) -> (QueueError?, [Int: QueueError]) {
        var refused: [Int: QueueError] = [:]
        attempt: while true {
            var limited = false
            do {
                try db.execute("BEGIN IMMEDIATE")
                for (index, op) in ops.enumerated() where refused[index] == nil {
                    guard op.refusable else {
                        if limited {
                            limitPages(forIntake: false)
                            limited = false
                        }
                        try op.body(db)
                        continue
                    }
                    if !limited {
                        limitPages(forIntake: true)
                        limited = true
                    }
                    try db.execute("SAVEPOINT intake")
                    do {
                        try op.body(db)
                        try db.execute("RELEASE intake")
                    } catch let error as SQLiteError where error.isFull {
                        db.resetBusyStatements()
                        refused[index] = QueueError(path: path, error)
                        guard sqlite3_get_autocommit(db.handle) == 0 else {
                            // SQLite undid the whole transaction: again, without this append.
                            limitPages(forIntake: false)
                            continue attempt
                        }
                        try db.execute("ROLLBACK TO intake; RELEASE intake")
                    }
                }
                if limited { limitPages(forIntake: false) }
                db.resetBusyStatements()
                beforeCommit.withLock { $0 }?.body()
                try db.execute("COMMIT")
                return (nil, refused)
            } catch {
                db.resetBusyStatements()
                try? db.execute("ROLLBACK")
                if limited { limitPages(forIntake: false) }
                let queueError = QueueError(path: path, error)
                // A full disk at the commit: the appends are refused, the rest committed again.
                let appends = ops.indices.filter { ops[$0].refusable && refused[$0] == nil }
                if queueError.isFull, !appends.isEmpty {
                    for index in appends { refused[index] = queueError }
                    continue attempt
                }
                if let sqlite = error as? SQLiteError, sqlite.isFull || sqlite.isCorrupt || sqlite.isReadOnly {
                    pending.withLock { $0.failure = queueError }
                }
                return (queueError, refused)
            }
        }
    }

    /// Runs `body` in one transaction, now, on the commit thread (for the command-line tools).
    package func transaction<T>(_ body: (SQLiteDatabase) throws -> T) throws(QueueError) -> T {
        let path = self.path
        let result: Result<T, QueueError> = serial.sync {
            do {
                try db.execute("BEGIN IMMEDIATE")
                let value = try body(db)
                db.resetBusyStatements()
                try db.execute("COMMIT")
                return .success(value)
            } catch {
                db.resetBusyStatements()
                try? db.execute("ROLLBACK")
                return .failure(QueueError(path: path, error))
            }
        }
        return try result.get()
    }

    /// Folds the write-ahead log back into the file and truncates it (at the end of a run).
    package func checkpointWAL() {
        serial.sync { _ = try? db.text("PRAGMA wal_checkpoint(TRUNCATE)") }
    }

    // MARK: Statements shared by the host and the tools

    /// Inserts `tasks`; returns those whose producer id an earlier task still holds (not final, or
    /// final after `dedupAfter`, Unix ms), by index in `tasks`: they are duplicates, not inserted.
    /// An id whose task became final before `dedupAfter` is free again.
    @discardableResult
    package static func insert(_ tasks: [NewTask], into db: SQLiteDatabase, now: Int64, dedupAfter: Int64 = .min)
        throws -> [Int: ExistingTask]
    {
        var duplicates: [Int: ExistingTask] = [:]
        // A taken id leaves the row out (the unique index on task_id); only then is the holder read.
        let statement = try db.statement(
            """
            INSERT INTO tasks(state, source, seq, task_id, target_kind, target, executor, priority, payload, raw,
                batch, enqueued_at, finished_at, error)
            VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(task_id) WHERE task_id IS NOT NULL DO NOTHING
            """)
        var nextSeq: [String: UInt64] = [:]
        for (index, task) in tasks.enumerated() {
            nextSeq[task.source] = max(nextSeq[task.source] ?? 0, task.seq + 1)
            let dead = task.rejected != nil
            let values: [SQLiteValue] = [
                .integer((dead ? TaskState.dead : TaskState.queued).rawValue), .text(task.source),
                .integer(Int64(task.seq)), .optional(task.taskId), .integer(task.target?.storedKind ?? 0),
                .optional(task.target?.storedText), .optional(task.executor), .int(task.priority),
                .optional(task.payload), .text(task.raw), .optional(task.batch), .integer(now),
                dead ? .integer(now) : .null, .optional(task.rejected),
            ]
            statement.reset()
            try statement.bind(values)
            _ = try statement.step()
            guard let id = task.taskId, db.changes == 0, let existing = try db.task(withId: id) else { continue }
            if !existing.state.isFinal || existing.finishedAt > dedupAfter {
                duplicates[index] = ExistingTask(row: existing.row, state: existing.state)
                continue
            }
            // Its holder finished before the window: the id is free again.
            try db.releaseTaskId(row: existing.row)
            statement.reset()
            try statement.bind(values)
            _ = try statement.step()
        }
        for (source, next) in nextSeq {
            try db.run(
                """
                INSERT INTO sources(name, next_seq) VALUES(?, ?)
                ON CONFLICT(name) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)
                """, [.text(source), .integer(Int64(next))])
        }
        return duplicates
    }

    package static func save(_ checkpoint: Checkpoint, into db: SQLiteDatabase) throws {
        try db.run(
            "INSERT OR REPLACE INTO checkpoints(source, file, device, inode, offset, complete) VALUES(?, ?, ?, ?, ?, ?)",
            [
                .text(checkpoint.source), .text(checkpoint.file), .integer(checkpoint.device),
                .integer(checkpoint.inode), .integer(checkpoint.offset), .integer(checkpoint.complete ? 1 : 0),
            ])
    }

    /// Sets or clears a target's parked flag.
    package static func setParked(_ target: TargetID, _ parked: Bool, reason: String?, in db: SQLiteDatabase) throws {
        if parked {
            try db.run(
                "INSERT OR REPLACE INTO targets(target_kind, target, parked, reason) VALUES(?, ?, 1, ?)",
                [.integer(target.storedKind), .text(target.storedText), .optional(reason)])
        } else {
            try db.run(
                "DELETE FROM targets WHERE target_kind = ? AND target = ?",
                [.integer(target.storedKind), .text(target.storedText)])
        }
    }

    package static func readTask(_ statement: SQLiteStatement) -> StoredTask? {
        guard let target = TargetID(kind: statement.int(4), text: statement.text(5)) else { return nil }
        return StoredTask(
            row: statement.int(0), source: statement.text(1) ?? "", seq: UInt64(max(0, statement.int(2))),
            taskId: statement.text(3), target: target, executor: statement.text(6) ?? "",
            priority: Int(statement.int(7)), payload: statement.text(8) ?? "null", raw: statement.text(9) ?? "",
            batch: statement.text(10), attempts: Int(statement.int(11)), notBefore: statement.int(12),
            crashes: Int(statement.int(13)))
    }

    package static let taskColumns =
        "id, source, seq, task_id, target_kind, target, executor, priority, payload, raw, batch, attempts, not_before, crashes"

    /// The tasks a query selects (`condition` follows `WHERE`), in arrival order.
    package static func tasks(where condition: String, _ bindings: [SQLiteValue], in db: SQLiteDatabase) throws
        -> [StoredTask]
    {
        let statement = try db.statement("SELECT \(taskColumns) FROM tasks WHERE \(condition)")
        defer { statement.reset() }
        try statement.bind(bindings)
        var tasks: [StoredTask] = []
        while try statement.step() {
            if let task = readTask(statement) { tasks.append(task) }
        }
        return tasks
    }
}

/// Wall-clock Unix nanoseconds (one clock for the host).
package func unixNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}
