import ArgumentParser
import Foundation
import TaskHostConfig
import TaskHostPlugins
import TaskHostRuntime
import TaskHostScheduler
import TaskHostStore

/// The configuration and its durable queue, for the operator's commands.
struct QueueOptions: ParsableArguments {
    @Argument(help: "The pipeline's configuration (YAML or JSON).")
    var config: String

    func admin() throws -> QueueAdmin {
        do {
            let loaded = try ConfigLoader.load(path: config, environment: ProcessInfo.processInfo.environment)
            return try QueueAdmin(config: loaded)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
    }
}

/// Runs an operator command; its errors are printed with their remedy, exit code 2.
func operate<T>(_ body: () throws(ConfigError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        printError(error.description)
        throw ExitCode(2)
    }
}

struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue",
        abstract: "Add tasks (JSON lines) to a pipeline's durable queue, as one of its sources would.",
        discussion: """
            Safe while `taskhost run` works on the same queue: the tasks are committed, then the running \
            host is woken. Lines that cannot be read are kept as dead letters and listed; exit code 1 then.
            """)

    @OptionGroup var queue: QueueOptions

    @Option(help: "The source whose routing and targetId path apply (default: the first source).")
    var source: String?

    @Argument(help: "A file of JSON lines, or - for standard input.")
    var file: String

    func run() async throws {
        let admin = try queue.admin()
        let data: Data
        if file == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let contents = FileManager.default.contents(atPath: file) else {
                printError("\(file): cannot read the file\n  check the path")
                throw ExitCode(2)
            }
            data = contents
        }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .map(String.init)
        let report = try operate { () throws(ConfigError) in try admin.enqueue(lines: lines, source: source) }
        for (line, reason) in report.rejected {
            printError("\(file):\(line): rejected (kept as a dead letter): \(reason)")
        }
        for (line, id, state) in report.duplicates {
            printError("\(file):\(line): duplicate of task '\(id)' (\(state)): not queued again")
        }
        let host =
            admin.hostPID.map { " (host running, pid \($0), woken)" }
            ?? " (no host running: `taskhost run` picks them up)"
        print("\(report.accepted) task\(report.accepted == 1 ? "" : "s") queued in \(admin.path)\(host)")
        if !report.rejected.isEmpty { throw ExitCode(1) }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a pipeline's durable queue: depth by state, busy, backed-off and parked targets, "
            + "the oldest waiting task, dead letters.")

    @OptionGroup var queue: QueueOptions

    @Flag(help: "One JSON object instead of text.")
    var json = false

    func run() async throws {
        let admin = try queue.admin()
        let status = try operate { () throws(ConfigError) in try admin.status() }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(status), as: UTF8.self))
            return
        }
        func list(_ targets: [TargetID], _ count: Int? = nil) -> String {
            targets.isEmpty
                ? ""
                : ": " + targets.map(\.commandLineText).joined(separator: ", ")
                    + ((count ?? 0) > targets.count ? ", ..." : "")
        }
        print("queue:        \(status.path) (\(status.fileBytes / 1024) KiB)")
        print("host:         \(status.hostPID.map { "running, pid \($0)" } ?? "not running")")
        print("queued:       \(status.queued) (\(status.backingOff) backing off)")
        print(
            "running:      \(status.running)"
                + (status.hostPID == nil && status.running > 0
                    ? " (leased by a host that stopped: back at the head of their targets on the next run)" : ""))
        print("succeeded:    \(status.succeeded) (kept for the retention period)")
        print("dead letters: \(status.deadLetters)")
        print("busy targets: \(status.busyTargets.count)\(list(status.busyTargets))")
        print("backing off:  \(status.backedOffTargets.count)\(list(status.backedOffTargets))")
        print("parked:       \(status.parkedTargets.count)\(list(status.parkedTargets))")
        if let row = status.oldestRow, let target = status.oldestTarget, let age = status.oldestAgeSeconds {
            print(
                "oldest:       task #\(row) of target \(target.commandLineText), waiting \(String(format: "%.1f", age)) s"
            )
        } else {
            print("oldest:       nothing waiting")
        }
    }
}

struct TargetsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "targets",
        abstract: "Park, release or drain a target of a pipeline's durable queue.",
        discussion: """
            park: nothing more of the target starts (its running task finishes). release: it resumes, its \
            head with fresh attempts. drain: the queued tasks of a parked target become dead letters and \
            the target resumes. With a host running, the host applies the command.
            """)

    @OptionGroup var queue: QueueOptions

    @Argument(help: "park, release or drain.")
    var verb: String

    @Argument(
        help: """
            The target: a number names an integer target (42), a JSON string a string target ('"42"', \
            needed only for a string that reads as a number), any other text a string target (app_android).
            """)
    var target: String

    func run() async throws {
        guard let verb = TargetVerb(rawValue: verb) else {
            printError("unknown command '\(verb)'\n  use park, release or drain")
            throw ExitCode(2)
        }
        let admin = try queue.admin()
        let target = self.target
        let result = try operate { () throws(ConfigError) in try admin.target(verb, target) }
        print("\(TargetID(commandLine: target).commandLineText): \(result)")
        if !result.succeeded { throw ExitCode(1) }
    }
}

struct DeadLettersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "List, requeue or purge the dead letters of a pipeline's durable queue.",
        discussion: """
            list prints one JSON object per dead letter (row, id, targetId, source, seq, attempts, error, \
            input). requeue puts the selected ones back at the end of their targets' queues with fresh \
            attempts; purge deletes them. Select with --row (repeatable) or --target; requeue and purge \
            without a selection need --all.
            """)

    @OptionGroup var queue: QueueOptions

    @Argument(help: "list, requeue or purge.")
    var verb: String

    @Option(help: "A dead letter's row number, from list (repeatable).")
    var row: [Int64] = []

    @Option(help: "Only this target's dead letters.")
    var target: String?

    @Flag(help: "Act on every dead letter.")
    var all = false

    @Option(help: "At most this many rows for list.")
    var limit = 1000

    func run() async throws {
        let admin = try queue.admin()
        let selection = QueueAdmin.Selection(rows: row, target: target)
        switch verb {
        case "list":
            let limit = self.limit
            let letters = try operate { () throws(ConfigError) in try admin.deadLetters(selection, limit: limit) }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            for letter in letters { print(String(decoding: try encoder.encode(letter), as: UTF8.self)) }
        case "requeue", "purge":
            guard all || !row.isEmpty || target != nil else {
                printError("\(verb) needs a selection\n  give --row N, --target T, or --all")
                throw ExitCode(2)
            }
            if verb == "requeue" {
                let (requeued, unreadable) = try operate { () throws(ConfigError) in try admin.requeue(selection) }
                print("\(requeued) dead letter\(requeued == 1 ? "" : "s") requeued")
                if unreadable > 0 {
                    print(
                        "\(unreadable) left: inputs that could not be read; fix them and `taskhost enqueue` them, "
                            + "then purge these")
                }
            } else {
                let purged = try operate { () throws(ConfigError) in try admin.purge(selection) }
                print("\(purged) dead letter\(purged == 1 ? "" : "s") purged")
            }
        default:
            printError("unknown command '\(verb)'\n  use list, requeue or purge")
            throw ExitCode(2)
        }
    }
}

struct TasksCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tasks",
        abstract: "Show one task of a pipeline's durable queue: its state, attempts, last error and output.",
        discussion: """
            show ID: the task with that id (the producer's `id`, or SOURCE-SEQ as in the results file for a \
            task that came without one). Finished tasks are kept for queue.retainFinishedMs; with an id, a \
            slim record (no input or output) for queue.dedupWindowMs. Exit code 1 when the queue holds no \
            such task.
            """)

    @OptionGroup var queue: QueueOptions

    @Argument(help: "show.")
    var verb: String

    @Argument(help: "The task's id.")
    var id: String

    @Flag(help: "One JSON object instead of text.")
    var json = false

    /// The task as `--json` prints it; times in RFC 3339.
    struct Shown: Encodable {
        var id: String
        var row: Int64
        var state: String
        var source: String
        var seq: UInt64
        var target: String?
        var targetIsInteger: Bool
        var executor: String?
        var attempts: Int
        var enqueuedAt: String
        var startedAt: String?
        var finishedAt: String?
        var notBefore: String?
        var error: String?
        var output: String?
        var input: String

        enum CodingKeys: String, CodingKey {
            case id, row, state, source, seq, target, executor, attempts, enqueuedAt, startedAt, finishedAt
            case notBefore, error, output, input
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(id, forKey: .id)
            try container.encode(row, forKey: .row)
            try container.encode(state, forKey: .state)
            try container.encode(source, forKey: .source)
            try container.encode(seq, forKey: .seq)
            // An integer target as a number, a string target as a string.
            if targetIsInteger, let target, let value = Int64(target) {
                try container.encode(value, forKey: .target)
            } else {
                try container.encode(target, forKey: .target)
            }
            try container.encode(executor, forKey: .executor)
            try container.encode(attempts, forKey: .attempts)
            try container.encode(enqueuedAt, forKey: .enqueuedAt)
            try container.encode(startedAt, forKey: .startedAt)
            try container.encode(finishedAt, forKey: .finishedAt)
            try container.encode(notBefore, forKey: .notBefore)
            try container.encode(error, forKey: .error)
            try container.encode(output, forKey: .output)
            try container.encode(input, forKey: .input)
        }
    }

    static func time(_ milliseconds: Int64?) -> String? {
        guard let milliseconds, milliseconds > 0 else { return nil }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
    }

    func run() async throws {
        guard verb == "show" else {
            printError("unknown command '\(verb)'\n  use show")
            throw ExitCode(2)
        }
        let admin = try queue.admin()
        let id = self.id
        guard let task = try operate({ () throws(ConfigError) in try admin.task(id) }) else {
            printError(
                "no task '\(id)' in \(admin.path)\n  check the id (a task without one is SOURCE-SEQ, as in the "
                    + "results file); finished tasks are kept for queue.retainFinishedMs, their ids for "
                    + "queue.dedupWindowMs")
            throw ExitCode(1)
        }
        let shown = Shown(
            id: task.id ?? id, row: task.row, state: task.state.name, source: task.source, seq: task.seq,
            target: task.targetText, targetIsInteger: task.targetIsInteger, executor: task.executor,
            attempts: task.attempts,
            enqueuedAt: Self.time(task.enqueuedAt) ?? "", startedAt: Self.time(task.startedAt),
            finishedAt: Self.time(task.finishedAt), notBefore: Self.time(task.notBefore), error: task.error,
            output: task.output, input: task.input)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(shown), as: UTF8.self))
            return
        }
        let target = task.targetText.map { task.targetIsInteger ? "\($0) (integer)" : "\"\($0)\" (string)" }
        print("id:         \(shown.id)")
        print("state:      \(shown.state)")
        print("target:     \(target ?? "none (the input could not be read)")")
        print("executor:   \(shown.executor ?? "none")")
        print("source:     \(shown.source) (seq \(shown.seq))")
        print("attempts:   \(shown.attempts)")
        print("enqueued:   \(shown.enqueuedAt)")
        print("started:    \(shown.startedAt ?? "-")")
        print("finished:   \(shown.finishedAt ?? "-")")
        if let notBefore = shown.notBefore, !task.state.isFinal { print("not before: \(notBefore)") }
        print("last error: \(shown.error ?? "-")")
        print("output:     \(shown.output ?? "-")")
    }
}
