import Foundation
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostStore
import Testing

@testable import TaskHostRuntime

/// The example plugins built from Plugins/, loaded from their `.so` files, doing their real work.
@Suite struct ExamplePluginTests {
    func executor(_ name: String, config: String, outcomes: OutcomeRecorder) throws -> PluginExecutor {
        let instance = try loader().load(name).makeInstance(configuration: config, logger: LogRecorder().logger)
        return PluginExecutor(instance: instance, outcomes: outcomes.callback)
    }

    @Test("TargetFile appends each task to its target's file, in each target's order")
    func targetFile() async throws {
        let folder = Paths.scratch() + "/targets"
        let outcomes = OutcomeRecorder()
        let executor = try executor("TargetFile", config: #"{"directory": "\#(folder)"}"#, outcomes: outcomes)
        let targets: [TargetID] = ["db/1", "db 2", 3]
        let tasks = (0..<60).map { TaskItem(targetId: targets[$0 % 3], payload: #"{"n": \#($0)}"#) }
        let summary = await run(executor: executor, tasks: TaskList(tasks), maxConcurrency: 3)
        #expect(summary.succeeded == 60)
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        #expect(files == ["3.jsonl", "db 2.jsonl".replacingOccurrences(of: " ", with: "_"), "db_1.jsonl"].sorted())
        for file in files {
            let lines = try String(contentsOfFile: folder + "/" + file, encoding: .utf8).split(separator: "\n")
            #expect(lines.count == 20)
            let records = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
            let numbers = records.map { ($0["payload"] as! [String: Any])["n"] as! Int }
            #expect(numbers == numbers.sorted(), "\(file) is out of order")
            let sequences = records.map { $0["sequence"] as! Int }
            #expect(sequences == sequences.sorted())
        }
        #expect(outcomes.all.allSatisfy { $0.outcome.output?.hasPrefix(folder) == true })
    }

    @Test("TargetFile refuses a configuration without a directory, naming the key")
    func targetFileConfiguration() throws {
        let plugin = try loader().load("TargetFile")
        let message = plugin.validate(configuration: "{}")
        #expect(message?.contains("directory") == true)
    }

    @Test("Command runs the program per task: payload on stdin, task in the environment")
    func commandRuns() async throws {
        let outcomes = OutcomeRecorder()
        let script = #"read -r line; echo "$TASKHOST_TARGET_ID/$TASKHOST_ATTEMPT/$TASKHOST_TASK_ID: $line""#
        let executor = try executor(
            "Command", config: #"{"program": "/bin/sh", "args": ["-c", \#(quoted(script))], "timeoutMs": 20000}"#,
            outcomes: outcomes)
        let tasks = (0..<6).map { TaskItem(targetId: .string("host-\($0 % 2)"), payload: "line \($0)", id: "id\($0)") }
        let summary = await run(executor: executor, tasks: TaskList(tasks), maxConcurrency: 4)
        #expect(summary.succeeded == 6)
        let outputs = Set(
            outcomes.all.compactMap { $0.outcome.output?.trimmingCharacters(in: .whitespacesAndNewlines) })
        #expect(outputs == Set((0..<6).map { "host-\($0 % 2)/1/id\($0): line \($0)" }))
    }

    @Test("Command maps exit statuses: 75 is retryable, others fail with stderr, a slow program times out")
    func commandStatuses() async throws {
        let outcomes = OutcomeRecorder()
        let script = #"case "$(cat)" in temp) exit 75;; bad) echo "no such user" >&2; exit 3;; slow) sleep 30;; esac"#
        let executor = try executor(
            "Command", config: #"{"program": "/bin/sh", "args": ["-c", \#(quoted(script))], "timeoutMs": 300}"#,
            outcomes: outcomes)
        let tasks = ["temp", "bad", "slow", "fine"].enumerated().map {
            TaskItem(targetId: .integer(Int64($0)), payload: $1)
        }
        let summary = await run(executor: executor, tasks: TaskList(tasks), maxConcurrency: 4)
        #expect(summary.succeeded == 1)
        let byPayload = Dictionary(uniqueKeysWithValues: outcomes.all.map { ($0.payload, $0.outcome) })
        #expect(byPayload["temp"]?.status == 3)  // TH_RETRYABLE
        #expect(byPayload["bad"]?.status == 2)  // TH_ERROR
        #expect(byPayload["bad"]?.message?.contains("exit status 3") == true)
        #expect(byPayload["bad"]?.message?.contains("no such user") == true)
        #expect(byPayload["slow"]?.status == 4)  // TH_TIMEOUT
    }

    @Test("Command: a timeout of the host cancels the program through taskhost.cancel/1")
    func commandCancelled() async throws {
        let outcomes = OutcomeRecorder()
        let executor = try executor(
            "Command", config: #"{"program": "/bin/sleep", "args": ["30"], "timeoutMs": 60000}"#, outcomes: outcomes)
        let clock = TestClock()
        // The plugin is told the attempt's deadline on the real clock (th_task.deadline_ns): 50 s
        // away, so the test clock's timeout cancels it first, at once.
        let scheduler = Scheduler(
            executor: executor, configuration: SchedulerConfiguration(timeout: .seconds(50)), clock: clock)
        let summary = await withTaskGroup(of: RunSummary<String>.self) { group in
            group.addTask { await scheduler.run(TaskList([TaskItem(targetId: "a", payload: "")])) }
            while clock.sleepers == 0 { await Task.yield() }
            clock.advance(by: .seconds(50))
            return await group.next()!
        }
        #expect(summary.deadLettered == 1)
        #expect(outcomes.all.map(\.outcome.status) == [5])  // TH_CANCELLED
    }

    @Test("Command refuses a program that does not exist, at create")
    func commandConfiguration() throws {
        let plugin = try loader().load("Command")
        #expect(plugin.validate(configuration: #"{"args": []}"#)?.contains("program") == true)
        do {
            _ = try plugin.makeInstance(
                configuration: #"{"program": "no-such-program-here"}"#, logger: LogRecorder().logger)
            Issue.record("create accepted a missing program")
        } catch {
            #expect(error.message.contains("no-such-program-here"))
        }
    }
}

/// A string as a JSON literal.
func quoted(_ text: String) -> String {
    String(decoding: try! JSONEncoder().encode(text), as: UTF8.self)
}
