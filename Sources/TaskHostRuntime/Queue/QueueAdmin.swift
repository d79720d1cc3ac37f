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
        if config.postgres != nil { throw ConfigError.postgresNotYetRunnable(config) }
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
        /// Input lines (1-based) whose id a task already holds, with that task's state: not queued.
        package var duplicates: [(line: Int, id: String, state: String)] = []
    }

    /// Adds tasks (JSON lines) as `source` would have: same routing, same target id path.
    /// Queues the lines of `bytes` (JSON Lines, LF or CRLF, as a file source reads them), as
    /// ``enqueue(lines:source:)``.
    package func enqueue(bytes: [UInt8], source name: String?) throws(ConfigError) -> EnqueueReport {
        let lines = bytes.split(separator: 10, omittingEmptySubsequences: false).map { line in
            SourceLine(line.last == 13 ? line.dropLast() : line)
        }
        return try enqueue(lines: lines, source: name)
    }

    package func enqueue(lines: [SourceLine], source name: String?) throws(ConfigError) -> EnqueueReport {
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
                var seq = try db.nextSequence(of: source.name)
                var rows: [NewTask] = []
                var lineOfRow: [Int] = []
                for (index, input) in lines.enumerated() where !input.isBlank {
                    let (line, decoded) = decoder.decode(input, seq: seq, batch: nil)
                    switch decoded {
                    case .success(let item):
                        rows.append(
                            NewTask(
                                source: source.name, seq: seq, taskId: item.id, target: item.targetId,
                                executor: executors[item.payload.executor], priority: item.priority,
                                payload: item.payload.payload, raw: line, batch: nil))
                        report.accepted += 1
                        lineOfRow.append(index + 1)
                    case .failure(let rejection):
                        rows.append(
                            NewTask(
                                source: source.name, seq: seq, taskId: nil, target: nil, executor: nil, priority: 0,
                                payload: nil, raw: line, batch: nil, rejected: rejection.reason))
                        report.rejected.append((index + 1, rejection.reason))
                        sink?.write(
                            bytes: deadLetterLine(
                                input, text: line, source: source.name, seq: seq, error: rejection.reason))
                        lineOfRow.append(index + 1)
                    }
                    seq += 1
                }
                let now = unixMilliseconds()
                let window = Int64((queue.settings.dedupWindow.seconds * 1000).rounded())
                let duplicates = try DurableQueue.insert(rows, into: db, now: now, dedupAfter: now - window)
                for (index, existing) in duplicates.sorted(by: { $0.key < $1.key }) {
                    report.duplicates.append((lineOfRow[index], rows[index].taskId ?? "", existing.state.name))
                    report.accepted -= 1
                }
            }
        } catch {
            throw ConfigError(error)
        }
        sink?.flush()
        notifyHost()
        return report
    }

    // MARK: Tasks

    /// The task a producer's id (or `SOURCE-SEQ`) names, nil when the queue holds none: not
    /// enqueued, or finished longer ago than `retainFinishedMs` (without an id) or
    /// `dedupWindowMs` (with one).
    package func task(_ id: String) throws(ConfigError) -> TaskDetails? {
        do {
            return try queue.transaction { db in try db.taskDetails(id: id) }
        } catch {
            throw ConfigError(error)
        }
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
        /// Targets as they are: integers as JSON numbers, strings as JSON strings.
        package var busyTargets: [TargetID] = []
        package var backedOffTargets: [TargetID] = []
        package var parkedTargets: [TargetID] = []
        /// The oldest waiting task: its row, target and age in seconds.
        package var oldestRow: Int64?
        package var oldestTarget: TargetID?
        package var oldestAgeSeconds: Double?
        package var fileBytes: Int64 = 0
    }

    package func status(listLimit: Int = 20) throws(ConfigError) -> Status {
        var status = Status(path: queue.path, hostPID: hostPID)
        let now = unixMilliseconds()
        do {
            try queue.transaction { db in
                let counts = try db.countsByState()
                status.queued = counts[.queued] ?? 0
                status.running = counts[.running] ?? 0
                status.succeeded = counts[.succeeded] ?? 0
                status.deadLetters = counts[.dead] ?? 0
                status.backingOff = try db.countBackingOff(at: now)
                status.busyTargets = try db.busyTargets(limit: listLimit)
                status.backedOffTargets = try db.backedOffTargets(at: now, limit: listLimit)
                status.parkedTargets = try db.parkedTargetNames(limit: listLimit)
                if let oldest = try db.oldestQueued() {
                    status.oldestRow = oldest.row
                    status.oldestTarget = oldest.target
                    status.oldestAgeSeconds = Double(now - oldest.enqueuedAt) / 1000
                }
                status.fileBytes = try db.fileBytes()
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

    /// A target id as typed (``TargetID/init(commandLine:)``).
    func target(_ text: String) throws -> TargetID { TargetID(commandLine: text) }

    /// Parks, releases or drains a target. With a host running, the host applies it (to the
    /// tasks it holds too) and answers; otherwise it is applied to the queue here.
    package func target(_ verb: TargetVerb, _ text: String) throws(ConfigError) -> TargetCommandReport {
        do {
            let target = try self.target(text)
            guard let pid = hostPID else { return TargetCommandReport(outcome: try applyOffline(verb, target)) }
            // -1: a host holds the lock but has not written its pid yet; it applies pending
            // commands when it starts.
            let id = try queue.transaction { db in try db.insertCommand(verb, target) }
            if pid > 0 { kill(pid, SIGUSR1) }
            for attempt in 0..<200 {
                usleep(50_000)
                if let result = try queue.transaction({ db in try db.commandResult(id) }) {
                    return TargetCommandReport(outcome: result, appliedBy: pid)
                }
                if attempt % 20 == 19, let pid = hostPID, pid > 0 { kill(pid, SIGUSR1) }
                if hostPID == nil, try withdraw(id) {
                    // The host stopped before applying it: apply it here.
                    return TargetCommandReport(outcome: try applyOffline(verb, target))
                }
            }
            if try withdraw(id) { return TargetCommandReport(outcome: nil) }
            let result = try queue.transaction { db in try db.commandResult(id, appliedOnly: false) }
            return TargetCommandReport(outcome: result, appliedBy: pid)
        } catch {
            throw wrap(error)
        }
    }

    /// Takes back a command no host applied yet; false when a host applied it meanwhile.
    private func withdraw(_ id: Int64) throws -> Bool {
        try queue.transaction { db in try db.withdrawCommand(id) }
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
        package var targetId: TargetID?
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
    }

    package func deadLetters(_ selection: Selection = Selection(), limit: Int = 1000) throws(ConfigError)
        -> [DeadLetter]
    {
        do {
            let target = try selection.target.map { try self.target($0) }
            let letters = try queue.transaction { db in
                try db.deadLetters(DeadLetterSelection(rows: selection.rows, target: target), limit: limit)
            }
            return letters.map {
                DeadLetter(
                    row: $0.row, id: $0.id, targetId: $0.targetId, source: $0.source, seq: $0.seq,
                    attempts: $0.attempts,
                    error: $0.error, input: $0.input)
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
            let now = unixMilliseconds()
            let result = try queue.transaction { db in
                try db.requeue(DeadLetterSelection(rows: selection.rows, target: target), at: now)
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
                try db.purge(DeadLetterSelection(rows: selection.rows, target: target))
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

/// A dead-letter line for an input line that could not be read. One that is not UTF-8 has its
/// bytes exactly as they came in base64 (`inputBase64`, in place of `input`), since a JSON Lines
/// file can only hold text.
func deadLetterLine(_ input: SourceLine, text: String, source: String, seq: UInt64, error: String) -> [UInt8] {
    guard case .invalidUTF8(let bytes, _) = input else {
        return deadLetterLine(id: nil, target: nil, source: source, seq: seq, input: text, error: error, attempts: 0)
    }
    var letter = JSONObjectWriter()
    letter.add("source", source)
    letter.add("seq", seq)
    letter.add("inputBase64", Data(bytes).base64EncodedString())
    letter.add("error", error)
    letter.add("attempts", 0)
    return letter.finished
}

/// A dead-letter line for a row the scheduler never held.
func deadLetterLine(_ stored: StoredTask, error: String) -> [UInt8] {
    deadLetterLine(
        id: stored.taskId, target: stored.target, source: stored.source, seq: stored.seq, input: stored.raw,
        error: error, attempts: stored.attempts)
}

func isJSON(_ text: String) -> Bool { (try? JSONParser.parse(text)) != nil }

extension TargetID {
    /// A target as an operator types it: a whole number is an integer target (`42`); a JSON string
    /// is a string target (`'"42"'`, the way to name a string that reads as a number); any other
    /// text is a string target as typed (`app_android`).
    package init(commandLine text: String) {
        if let value = Int64(text) {
            self = .integer(value)
        } else if text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\""),
            case .string(let inner) = try? JSONParser.parse(text)
        {
            self = .string(inner)
        } else {
            self = .string(text)
        }
    }

    /// The target as ``init(commandLine:)`` reads it back: integers bare, strings as they are
    /// unless they would read as a number or start with a quote, then as a JSON string.
    package var commandLineText: String {
        switch self {
        case .integer(let value): return String(value)
        case .string(let text):
            guard Int64(text) != nil || text.hasPrefix("\"") || text.isEmpty else { return text }
            var writer = JSONObjectWriter()
            writer.add("s", text)
            let object = String(decoding: writer.finished, as: UTF8.self)
            return String(object.dropFirst(5).dropLast())  // {"s":"..."} -> "..."
        }
    }
}
