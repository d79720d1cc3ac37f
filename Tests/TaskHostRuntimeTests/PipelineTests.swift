import Foundation
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostStore
import Testing

@testable import TaskHostRuntime

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Pipelines on real configuration files, with the real plugins: in-process through
/// `buildPipeline` and `run(stop:)` (``runInProcess(_:in:file:environment:whileRunning:)``), and on
/// the real `taskhost` binary where the process itself is under test: its exit status for a
/// configuration it refuses, `taskhost check`, signals, standard input, threads it cannot get back.
@Suite struct PipelineTests {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
        /// Killed by a signal (then `status` is the signal's number).
        var signalled = false
    }

    static var binary: String { Paths.builtPlugins + "/taskhost" }

    /// Runs taskhost in `folder`; `whileRunning` may signal the process.
    @discardableResult
    static func taskhost(
        _ arguments: [String], in folder: String, stdin: String? = nil, environment: [String: String] = [:],
        whileRunning: ((Process) async -> Void)? = nil
    ) async throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        // The commands that load plugins find the ones built beside the tests.
        let loadsPlugins = ["run", "check", "plugin"].contains(arguments.first ?? "")
        process.arguments = arguments + (loadsPlugins ? ["--plugin-path", Paths.builtPlugins] : [])
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let input = Pipe()
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        if let whileRunning { await whileRunning(process) }
        // Read and waited for on a thread of its own: a test that blocked one of the few threads of
        // the cooperative pool for the life of a process would hold back the pipelines that other
        // tests run in-process meanwhile.
        let parts = UncheckedBox((process, out, err))
        return await Self.offPool {
            let (process, out, err) = parts.value
            let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
            let stderrData = err.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return Run(
                status: process.terminationStatus, stdout: String(decoding: stdoutData, as: UTF8.self),
                stderr: String(decoding: stderrData, as: UTF8.self),
                signalled: process.terminationReason == .uncaughtSignal)
        }
    }

    /// Runs `body` on a thread of its own, off the cooperative pool.
    static func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: body()) }
        }
    }

    /// How many children of `process` run `command` (its own only: other tests run the same
    /// commands at the same time).
    static func children(of process: Process, running command: String) -> Int {
        let found = try? Compiler.run("/usr/bin/pgrep", ["-P", "\(process.processIdentifier)", "-f", command])
        return found?.output.split(separator: "\n").count ?? 0
    }

    static func write(_ text: String, to path: String) throws {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    static func records(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    @Test("End to end: the results file shows every guarantee (cap, exclusivity, per-target FIFO)")
    func guaranteesFromResults() async throws {
        let folder = Paths.scratch()
        var lines: [String] = []
        for i in 0..<400 {
            let target = i % 7 == 0 ? #""hot""# : String(i % 13)
            lines.append(#"{"targetId": \#(target), "id": "t\#(i)", "data": "\#(i)"}"#)
        }
        try Self.write(lines.joined(separator: "\n") + "\n", to: folder + "/tasks.jsonl")
        let run = try await runInProcess(
            """
            scheduler: { maxConcurrency: 4 }
            executors:
              echo: { plugin: Echo, config: { delayMs: 1 } }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: echo }
            results: { path: \(folder)/out/results.jsonl }
            """, in: folder)
        #expect(run.exitCode == 0, "\(run)")
        let records = try Self.records(folder + "/out/results.jsonl")
        #expect(records.count == 400)
        #expect(Set(records.map { $0["id"] as! String }).count == 400)
        // Echo answers with the task's data as it came, "i" for the i-th task: JSON, so the results
        // line holds it as JSON (the string i), not as a string of JSON.
        #expect(
            records.allSatisfy {
                $0["status"] as? String == "succeeded" && $0["output"] as? String == "\(($0["seq"] as! Int) - 1)"
            })
        // Per target: executions do not overlap, and start in order of arrival.
        let byTarget = Dictionary(grouping: records) { "\($0["targetId"]!)" }
        for (target, runs) in byTarget {
            let ordered = runs.sorted { ($0["startedAt"] as! Int) < ($1["startedAt"] as! Int) }
            let seqs = ordered.map { $0["seq"] as! Int }
            #expect(seqs == seqs.sorted(), "target \(target) started out of order")
            for (a, b) in zip(ordered, ordered.dropFirst()) {
                #expect((a["finishedAt"] as! Int) <= (b["startedAt"] as! Int), "target \(target) overlapped")
            }
        }
        // Never more than the cap at once: sweep the intervals.
        var events: [(Int, Int)] = []
        for record in records {
            events.append((record["startedAt"] as! Int, 1))
            events.append((record["finishedAt"] as! Int, -1))
        }
        events.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        var running = 0
        var peak = 0
        for (_, delta) in events {
            running += delta
            peak = max(peak, running)
        }
        #expect(peak <= 4)
        #expect(peak >= 2)  // it did run tasks concurrently
    }

    @Test("A malformed line or a task without a target goes to the dead letters; the rest run")
    func malformedTasks() async throws {
        let folder = Paths.scratch()
        try Self.write(
            """
            {"targetId": "a", "data": 1}
            {"targetId": "a", "data": 2
            {"data": 3}
            {"targetId": {"nested": true}, "data": 4}
            [1, 2]
            {"targetId": 7, "data": 5}

            """, to: folder + "/tasks.jsonl")
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: echo }
            results: { path: \(folder)/results.jsonl }
            deadLetter: { path: \(folder)/dead.jsonl }
            """, in: folder)
        #expect(run.exitCode == 1, "\(run)")
        #expect(run.summary.succeeded == 2, "\(run)")
        #expect(run.summary.rejected == 4, "\(run)")
        let dead = try Self.records(folder + "/dead.jsonl")
        #expect(dead.map { $0["seq"] as! Int } == [2, 3, 4, 5])
        #expect((dead[0]["error"] as! String).hasPrefix("malformed JSON"))
        #expect(dead[0]["input"] as? String == #"{"targetId": "a", "data": 2"#)
        #expect(dead[1]["error"] as? String == "no targetId at $.targetId")
        #expect((dead[2]["error"] as! String).contains("expected a non-empty string or an integer"))
        #expect(dead[3]["error"] as? String == "a task must be a JSON object, got an array")
        let results = try Self.records(folder + "/results.jsonl")
        #expect(results.map { $0["seq"] as! Int } == [1, 6])
        #expect(results[1]["targetId"] as? Int == 7)
    }

    @Test(
        "Bad configurations: each error names the file, line, key and what to do",
        arguments: [
            ("executors:\n  echo: { plugin: Echo\nsources: {}\n", "pipeline.yaml:3:", "malformed YAML"),
            (
                "executors:\n  echo: { plugin: Echo }\nsources:\n  a: { kind: file, path: x.jsonl, executor: echo }\nretyr: {}\n",
                "pipeline.yaml:5:1: retyr: unknown key 'retyr'", "did you mean 'retry'?"
            ),
            (
                "scheduler: { maxConcurrency: lots }\nexecutors:\n  echo: { plugin: Echo }\nsources: {}\n",
                "pipeline.yaml:1:30: scheduler.maxConcurrency", "expected a whole number, got 'lots'"
            ),
            (
                "executors:\n  echo: { plugin: Echo }\nsources:\n  a: { kind: file, path: x.jsonl, executor: ecoh }\n",
                "pipeline.yaml:4:45: sources.a.executor: unknown executor 'ecoh'", "did you mean 'echo'?"
            ),
            (
                "executors:\n  echo: { plugin: Echo }\nsources:\n  a: { kind: fiel, path: x.jsonl, executor: echo }\n",
                "sources.a.kind: expected one of file, stdin, directory, http, interval, got 'fiel'",
                "did you mean 'file'?"
            ),
            (
                "executors:\n  echo: { plugin: Echo }\nsources:\n  a: { kind: file, path: x.jsonl, executor: echo, listen: \"127.0.0.1:1\" }\n",
                "pipeline.yaml:4:59: sources.a.listen: 'listen' is not a key of a file source",
                "it belongs to http sources; a file source takes executor, targetId, match, maxTaskBytes, path, follow"
            ),
            (
                "executors:\n  echo: { plugin: Echo }\nsources:\n  a: { kind: interval, template: {}, periodMs: 5, cron: \"* * * * *\", executor: echo }\n",
                "sources.a.periodMs", "give exactly one of 'periodMs' and 'cron'"
            ),
            (
                "executors:\n  echo: { plugin: Echo }\nsources:\n  a: { kind: interval, template: {}, cron: \"0 0 30 2 *\", executor: echo }\n",
                "pipeline.yaml:4:44: sources.a.cron", "cron '0 0 30 2 *' never fires: no month it names has a day 30"
            ),
            (
                "executors:\n  echo: { plugin: Echo }\nsources:\n  a: { kind: interval, template: {}, cron: \"0 9 * * MON-FRY\", executor: echo }\n",
                "pipeline.yaml:4:44: sources.a.cron", "bad day of week 'MON-FRY'; write values in 0-7 or SUN-SAT"
            ),
            (
                "executors:\n  echo: { plugin: Echo }\nsources:\n  a: { kind: interval, template: {}, cron: \"@daily\", timezone: Europe/Berln, executor: echo }\n",
                "pipeline.yaml:4:64: sources.a.timezone: unknown time zone 'Europe/Berln'",
                "did you mean 'Europe/Berlin'?"
            ),
            (
                "executors:\n  echo: { plugin: Echo }\nsources:\n  a: { kind: interval, template: {}, periodMs: 5, timezone: UTC, executor: echo }\n",
                "sources.a.timezone", "a time zone applies to a 'cron' schedule only"
            ),
            (
                "executors:\n  x: { plugin: NoSuchPlugin }\nsources:\n  a: { kind: stdin, executor: x }\n",
                "pipeline.yaml:2:16: executors.x.plugin:", "no plugin named 'NoSuchPlugin'"
            ),
            (
                "executors:\n  e:\n    plugin: Echo\n    config: { delayMs: -5 }\nsources:\n  a: { kind: stdin, executor: e }\n",
                "pipeline.yaml:4:13: executors.e.config", "key 'delayMs': expected 0 or more"
            ),
            (
                "executors:\n  e:\n    plugin: Echo\n    config: { delayMS: 5 }\nsources:\n  a: { kind: stdin, executor: e }\n",
                "pipeline.yaml:4:13: executors.e.config", "unknown key 'delayMS': did you mean 'delayMs'?"
            ),
            (
                "executors:\n  f: { library: pricing, function: pricing_reprice, signature: \"int32(strng, int64)\", arguments: [$.a, $.b] }\nsources:\n  a: { kind: stdin, executor: f }\n",
                "executors.f.signature", "unknown type 'strng'"
            ),
            (
                "executors:\n  f: { library: pricing, function: no_such_fn, signature: \"int32()\" }\nsources:\n  a: { kind: stdin, executor: f }\n",
                "pipeline.yaml:2:36: executors.f.function", "no exported function 'no_such_fn'"
            ),
            (
                "executors:\n  f:\n    library: pricing\n    function: pricing_apply_discount\n    signature: \"double(double, float)\"\n    arguments: [$.data.price, data.pct]\nsources:\n  a: { kind: stdin, executor: f }\n",
                "pipeline.yaml:6:16: executors.f.arguments", "argument 2: 'data.pct' is not a JSON path"
            ),
            (
                "executors:\n  f: { library: \"\", function: f, signature: \"int32()\" }\nsources:\n  a: { kind: stdin, executor: f }\n",
                "executors.f.library",
                "expected a library name (like pricing) or the path of its .so, got an empty string"
            ),
            (
                "executors:\n  f:\n    library: no_such_library_x\n    function: f\n    signature: \"int32()\"\nsources:\n  a: { kind: stdin, executor: f }\n",
                "pipeline.yaml:3:14: executors.f.library", "no library named 'no_such_library_x' (looked for"
            ),
            (
                "executors:\n  e: { plugin: Echo, config: { prefix: \"${NO_SUCH_VARIABLE_X}\" } }\nsources:\n  a: { kind: stdin, executor: e }\n",
                "pipeline.yaml:2:", "the environment variable NO_SUCH_VARIABLE_X is not set"
            ),
            (
                "executors:\n  e: { plugin: Echo }\nsources:\n  a: { kind: file, executor: e, targetId: data.x }\n",
                "sources.a.targetId", "start it with $"
            ),
        ])
    func badConfigurations(config: String, location: String, message: String) async throws {
        let folder = Paths.scratch()
        try Self.write(config, to: folder + "/pipeline.yaml")
        for command in ["check", "run"] {
            let run = try await Self.taskhost([command, "pipeline.yaml"], in: folder)
            #expect(run.status == 2, "\(command): \(run.stderr)")
            #expect(run.stderr.contains(location), "\(command): \(run.stderr)")
            #expect(run.stderr.contains(message), "\(command): \(run.stderr)")
        }
    }

    @Test("A Swift plugin that blocks its threads cannot stop the host's timeouts: the run ends, the tasks time out")
    func blockingSwiftPlugin() async throws {
        let folder = Paths.scratch()
        // More blocked executions than the machine has processors: on the host's own threads
        // they would stop its timers, and the run would never end.
        let count = ProcessInfo.processInfo.activeProcessorCount + 2
        try Self.write(
            (0..<count).map { #"{"targetId": \#($0), "id": "b\#($0)", "data": 1}"# }.joined(separator: "\n") + "\n",
            to: folder + "/tasks.jsonl")
        try Self.write(
            """
            queue: memory
            timeoutMs: 200
            retry: { maxAttempts: 1 }
            executors:
              e: { plugin: Echo, config: { blockMs: 600000 } }
            sources:
              a: { kind: file, path: tasks.jsonl, executor: e }
            results: { path: results.jsonl }
            deadLetter: { path: dead.jsonl }
            """, to: folder + "/pipeline.yaml")
        let run = try await Self.taskhost(["run", "pipeline.yaml", "--quiet"], in: folder) { process in
            // Fail, do not hang: a run still going long after its timeouts is killed.
            for _ in 0..<6000 where process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
            if process.isRunning { process.interrupt() }
            for _ in 0..<300 where process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
            if process.isRunning { _ = Glibc.kill(process.processIdentifier, SIGKILL) }
        }
        #expect(!run.signalled, "\(run.stderr)")
        #expect(run.status == 1, "\(run.stderr)")
        let dead = try Self.records(folder + "/dead.jsonl")
        #expect(dead.count == count, "\(run.stderr)")
    }

    @Test("check creates and destroys an instance of a plugin without validate: its create is the only check")
    func checkCreatesWithoutValidate() async throws {
        let folder = Paths.scratch()
        let plugins = folder + "/plugins"
        try FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: try Compiler.fixture("create_fails"), toPath: plugins + "/libcreatefails.so")
        try Self.write(
            """
            executors:
              x:
                plugin: \(plugins)/libcreatefails.so
                config: { url: "http://example.invalid" }
            sources:
              a: { kind: stdin, executor: x }
            """, to: folder + "/pipeline.yaml")
        for command in ["check", "run"] {
            let run = try await Self.taskhost([command, "pipeline.yaml"], in: folder)
            #expect(run.status == 2, "\(command): \(run.stderr)")
            #expect(run.stderr.contains("pipeline.yaml:4:13: executors.x.config"), "\(command): \(run.stderr)")
            #expect(run.stderr.contains("missing key 'endpoint'"), "\(command): \(run.stderr)")
        }
    }

    @Test("A valid configuration passes check without running anything")
    func checkRunsNothing() async throws {
        let folder = Paths.scratch()
        try Self.write(#"{"targetId": "a", "data": {}}"# + "\n", to: folder + "/tasks.jsonl")
        try Self.write(
            """
            {"executors": {"files": {"plugin": "TargetFile", "config": {"directory": "never-created"}}},
             "sources": {"a": {"kind": "file", "path": "tasks.jsonl", "executor": "files"}}}
            """, to: folder + "/pipeline.json")
        let run = try await Self.taskhost(["check", "pipeline.json"], in: folder)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("valid (1 executor, 1 source)"))
        #expect(!FileManager.default.fileExists(atPath: folder + "/never-created"))
    }

    @Test("check prints each cron source's next three fire times in RFC 3339, with the zone's offset")
    func checkPrintsCronTimes() async throws {
        let folder = Paths.scratch()
        try Self.write(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              yearly: { kind: interval, cron: "0 0 1 JAN *", template: { targetId: y }, executor: echo }
              office:
                kind: interval
                cron: "0 9 * * MON-FRI"
                timezone: Europe/Berlin
                template: { targetId: o }
                executor: echo
              ticks: { kind: interval, periodMs: 1000, template: { targetId: t }, executor: echo }
            """, to: folder + "/pipeline.yaml")
        let before = Date()
        let run = try await Self.taskhost(["check", "pipeline.yaml"], in: folder)
        let after = Date()
        #expect(run.status == 0, "\(run.stderr)")
        func line(_ name: String, _ cron: String, _ zone: String) throws -> [String] {
            let schedule = try CronSchedule(parsing: cron, timeZone: TimeZone(identifier: zone)!)
            return [before, after].map { now in
                "sources.\(name): next "
                    + schedule.upcoming(3, after: now).map(schedule.rfc3339).joined(separator: ", ")
            }
        }
        let lines = run.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 3, "\(run.stdout)")
        #expect(lines.first == "pipeline.yaml: valid (1 executor, 3 sources)")
        #expect(try line("yearly", "0 0 1 1 *", "UTC").contains(lines[1]), "\(run.stdout)")
        #expect(try line("office", "0 9 * * 1-5", "Europe/Berlin").contains(lines[2]), "\(run.stdout)")
        // The shape, independent of today's date: the first of January at midnight UTC, 09:00 in Berlin.
        #expect(lines[1].hasSuffix("-01-01T00:00:00Z"), "\(run.stdout)")
        #expect(lines[2].contains("T09:00:00+01:00") || lines[2].contains("T09:00:00+02:00"), "\(run.stdout)")
    }

    @Test("Standard input and match routing: each task goes to the executor its field names")
    func stdinAndRouting() async throws {
        let folder = Paths.scratch()
        try Self.write(
            """
            executors:
              loud: { plugin: Echo, config: { prefix: "LOUD " } }
              quiet: { plugin: Echo, config: { prefix: "quiet " } }
            sources:
              in:
                kind: stdin
                targetId: $.data.user
                match: { field: $.data.kind, routes: { shout: loud, whisper: quiet } }
            results: { path: results.jsonl }
            deadLetter: { path: dead.jsonl }
            """, to: folder + "/pipeline.yaml")
        let input = """
            {"data": {"user": "ann", "kind": "shout"}}
            {"data": {"user": "bob", "kind": "whisper"}}
            {"data": {"user": "cy", "kind": "sing"}}

            """
        let run = try await Self.taskhost(["run", "pipeline.yaml", "--quiet"], in: folder, stdin: input)
        #expect(run.status == 1)
        let results = try Self.records(folder + "/results.jsonl").sorted { ($0["seq"] as! Int) < ($1["seq"] as! Int) }
        #expect(results.map { $0["executor"] as! String } == ["loud", "quiet"])
        #expect((results[0]["output"] as! String).hasPrefix("LOUD "))
        let dead = try Self.records(folder + "/dead.jsonl")
        #expect(dead.first?["error"] as? String == "no route for $.data.kind = sing and no default executor")
    }

    @Test("In memory, SIGTERM drains with the grace period, then cancels; the results say what was cut off")
    func signalDuringRun() async throws {
        let folder = Paths.scratch()
        try Self.write(
            (0..<6).map { #"{"targetId": "t\#($0 % 2)", "data": "\#($0)"}"# }.joined(separator: "\n") + "\n",
            to: folder + "/tasks.jsonl")
        try Self.write(
            """
            scheduler: { maxConcurrency: 2 }
            executors:
              slow: { plugin: Command, config: { program: /bin/sleep, args: ["30"] } }
            sources:
              tasks: { kind: file, path: tasks.jsonl, executor: slow }
            results: { path: results.jsonl }
            shutdown: { gracePeriodMs: 200 }
            queue: memory
            """, to: folder + "/pipeline.yaml")
        let run = try await Self.taskhost(["run", "pipeline.yaml", "--quiet"], in: folder) { process in
            // Wait until both sleeps run, then ask for a stop.
            while Self.children(of: process, running: "sleep 30") < 2 {
                try? await Task.sleep(for: .milliseconds(20))
            }
            process.terminate()
        }
        #expect(run.status == 1, "\(run.stderr)")
        #expect(run.stderr.contains(#""succeeded":0"#))
        #expect(run.stderr.contains(#""cancelled":6"#))
        let results = try Self.records(folder + "/results.jsonl")
        #expect(results.count == 6)
        #expect(results.allSatisfy { $0["status"] as? String == "cancelled" })
        #expect(results.filter { $0["attempts"] as? Int == 1 }.count == 2)
    }
}

extension PipelineTests {
    @Test("An executor's own maxConcurrency caps its tasks, below the scheduler's cap")
    func executorCap() async throws {
        let folder = Paths.scratch()
        var lines: [String] = []
        for i in 0..<40 {
            lines.append(#"{"targetId": "t\#(i)", "data": {"kind": "\#(i % 2 == 0 ? "slow" : "fast")", "n": \#(i)}}"#)
        }
        try Self.write(lines.joined(separator: "\n") + "\n", to: folder + "/tasks.jsonl")
        let run = try await runInProcess(
            """
            scheduler: { maxConcurrency: 6 }
            executors:
              slow: { plugin: Echo, config: { delayMs: 2 }, maxConcurrency: 1 }
              fast: { plugin: Echo, config: { delayMs: 2 } }
            sources:
              tasks:
                kind: file
                path: \(folder)/tasks.jsonl
                match: { field: $.data.kind, routes: { slow: slow, fast: fast } }
            results: { path: \(folder)/results.jsonl }
            """, in: folder)
        #expect(run.exitCode == 0, "\(run)")
        let records = try Self.records(folder + "/results.jsonl")
        func peak(_ executor: String) -> Int {
            var events: [(Int, Int)] = []
            for record in records where record["executor"] as? String == executor {
                events.append((record["startedAt"] as! Int, 1))
                events.append((record["finishedAt"] as! Int, -1))
            }
            events.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            var running = 0
            var peak = 0
            for (_, delta) in events {
                running += delta
                peak = max(peak, running)
            }
            return peak
        }
        #expect(records.count == 40)
        #expect(peak("slow") == 1)
        #expect(peak("fast") > 1)
    }

    @Test("An interval source emits its template count times, then the run ends")
    func intervalSource() async throws {
        let folder = Paths.scratch()
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tick:
                kind: interval
                periodMs: 5
                count: 5
                template: { targetId: clock, data: { kind: tick } }
                executor: echo
            results: { path: \(folder)/results.jsonl }
            """, in: folder)
        #expect(run.exitCode == 0, "\(run)")
        let results = try Self.records(folder + "/results.jsonl")
        #expect(results.map { $0["seq"] as! Int } == [1, 2, 3, 4, 5])
        #expect(results.allSatisfy { $0["output"] as? [String: String] == ["kind": "tick"] })
    }

    @Test(
        "A task's data reaches the executor byte for byte, and JSON output lands in the results as JSON",
        arguments: ["memory", "durable"])
    func dataByteForByte(queue: String) async throws {
        let folder = Paths.scratch()
        // Whitespace, key order, number text beyond Int64 and Double, escapes: all as they came.
        let data = #"{"z":1,  "a":2,"big":18446744073709551615,"price":1.10,"e":1E2,"s":"\u00e9\t\/"}"#
        let lines = [
            #"{"targetId": "a", "data": \#(data)}"#,
            #"{"targetId": "b", "data": "plain text, not JSON"}"#,
            #"{"targetId": "c", "data": 12345678901234567890123}"#,
            #"{"targetId": "d", "other": [1, 2.50]}"#,
        ]
        try Self.write(lines.joined(separator: "\n") + "\n", to: folder + "/tasks.jsonl")
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: echo }
            results: { path: \(folder)/results.jsonl }
            \(queue == "memory" ? "queue: memory" : "")
            """, in: folder)
        #expect(run.exitCode == 0, "\(run)")
        let text = try String(contentsOfFile: folder + "/results.jsonl", encoding: .utf8)
        let byTarget = Dictionary(
            uniqueKeysWithValues: text.split(separator: "\n").map { line in
                (line.firstRange(of: #""targetId":""#).map { String(line[$0.upperBound...].prefix(1)) } ?? "", line)
            })
        // Echo answers with its payload: the output shows what the executor received.
        #expect(byTarget["a"]?.contains(#""output":\#(data)"#) == true, "\(text)")
        // The string data is JSON text (a JSON string), so it stands as that string.
        #expect(byTarget["b"]?.contains(#""output":"plain text, not JSON""#) == true, "\(text)")
        #expect(byTarget["c"]?.contains(#""output":12345678901234567890123"#) == true, "\(text)")
        // Without data, the executor receives the whole input line as it came.
        #expect(byTarget["d"]?.contains(#""output":{"targetId": "d", "other": [1, 2.50]}"#) == true, "\(text)")
        // Every line is still one JSON object.
        #expect(try Self.records(folder + "/results.jsonl").count == 4)
    }

    @Test(
        "A plugin is told each attempt's real deadline (th_task.deadline_ns), 0 without a timeout",
        arguments: ["memory", "durable"], [true, false])
    func deadlineReachesThePlugin(queue: String, timeout: Bool) async throws {
        let folder = Paths.scratch()
        try Self.write(
            #"{"targetId": "a", "data": 1}"# + "\n" + #"{"targetId": "b", "data": 2}"# + "\n",
            to: folder + "/tasks.jsonl")
        let run = try await runInProcess(
            """
            executors:
              sync: { plugin: Echo, config: { describe: true } }
              async: { plugin: Echo, config: { describe: true, delayMs: 1 } }
            sources:
              tasks:
                kind: file
                path: \(folder)/tasks.jsonl
                executor: sync
                match: { field: "$.data", routes: { "2": async } }
            results: { path: \(folder)/results.jsonl }
            \(timeout ? "timeoutMs: 30000" : "")
            \(queue == "memory" ? "queue: memory" : "")
            """, in: folder)
        #expect(run.exitCode == 0, "\(run)")
        let outputs = try Self.records(folder + "/results.jsonl").compactMap { $0["output"] as? [String: Any] }
        #expect(outputs.count == 2)
        for output in outputs {
            let remaining = output["remainingMs"] as? Int
            if timeout {
                // Counted from the call: a little under the 30 s timeout, never more.
                #expect(remaining.map { $0 > 20_000 && $0 <= 30_000 } == true, "\(output)")
            } else {
                #expect(remaining == nil, "\(output)")
            }
        }
    }

    @Test("A spool folder: each batch file runs, then moves to done/ or failed/")
    func spoolDirectory() async throws {
        let folder = Paths.scratch()
        let spool = folder + "/spool"
        try FileManager.default.createDirectory(atPath: spool, withIntermediateDirectories: true)
        try Self.write(
            #"{"targetId": "a", "data": "1"}"# + "\n" + #"{"targetId": "b", "data": "2"}"# + "\n",
            to: spool + "/first.jsonl")
        @Sendable func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: spool + "/" + path) }
        // Each wait is bounded: the test fails rather than hangs.
        @Sendable func wait(for condition: () -> Bool) async {
            for _ in 0..<400 where !condition() { try? await Task.sleep(for: .milliseconds(25)) }
        }
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo, config: { failOn: "\\"bad\\"" } }
            sources:
              spool: { kind: directory, path: \(spool), executor: echo }
            results: { path: \(folder)/results.jsonl }
            deadLetter: { path: \(folder)/dead.jsonl }
            """, in: folder
        ) { stop in
            // A batch written while it runs is picked up too (inotify), but only once it is
            // closed: a file half-written when another event arrives is not read half-way. The
            // first batch done, the folder is watched.
            await wait { exists("done/first.jsonl") }
            let slow = FileHandle(
                fileDescriptor: open(spool + "/third.jsonl", O_WRONLY | O_CREAT, 0o644), closeOnDealloc: true)
            slow.write(Data((#"{"targetId": "c", "data": "3"}"# + "\n").utf8))
            try? Self.write(#"{"targetId": "a", "data": "bad"}"# + "\n", to: spool + "/second.jsonl")
            // The second batch's event handled (its batch final) while the third is half-written.
            await wait { exists("failed/second.jsonl") }
            slow.write(Data((#"{"targetId": "c", "data": "4"}"# + "\n").utf8))
            try? slow.close()
            await wait { exists("done/third.jsonl") }
            stop.request()
        }
        #expect(exists("done/first.jsonl"))
        let listing = (try? FileManager.default.subpathsOfDirectory(atPath: spool)) ?? []
        #expect(exists("failed/second.jsonl"), "\(listing) \(run)")
        #expect(run.exitCode == 1, "\(run)")  // the bad task was dead-lettered
        let results = try Self.records(folder + "/results.jsonl")
        #expect(results.filter { $0["status"] as? String == "succeeded" }.count == 4)
        #expect(exists("done/third.jsonl"))
    }
}

/// The http source and the operations endpoints of a running pipeline (in-process).
@Suite struct HTTPSourceTests {
    struct Reply {
        var status: Int
        var body: String
        var headers: [String: String]
    }

    static func request(
        _ url: String, method: String = "GET", body: String? = nil, token: String? = nil
    ) async throws -> Reply {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        if let body { request.httpBody = Data(body.utf8) }
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        var headers: [String: String] = [:]
        for (key, value) in http.allHeaderFields { headers["\(key)".lowercased()] = "\(value)" }
        return Reply(status: http.statusCode, body: String(decoding: data, as: UTF8.self), headers: headers)
    }

    static func freePort() -> Int { Int.random(in: 20_000..<40_000) }

    /// A listening socket on a loopback port, held until closed: another server cannot bind it.
    static func holdPort() -> (port: Int, descriptor: Int32) {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var size = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                _ = bind(descriptor, raw, size)
                _ = listen(descriptor, 1)
                _ = getsockname(descriptor, raw, &size)
            }
        }
        return (Int(UInt16(bigEndian: address.sin_port)), descriptor)
    }

    @Test(
        "A source or endpoint whose port is taken stops the run with exit code 2 and the address",
        arguments: ["source", "endpoint"])
    func portTaken(which: String) async throws {
        let folder = Paths.scratch()
        let (port, descriptor) = Self.holdPort()
        defer { close(descriptor) }
        let free = Self.freePort()
        let listen = which == "source" ? port : free
        let metrics = which == "endpoint" ? port : free
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              api: { kind: http, listen: "127.0.0.1:\(listen)", executor: echo }
            results: { path: \(folder)/results.jsonl }
            metrics: { listen: "127.0.0.1:\(metrics)" }
            queue: memory
            """, in: folder)
        #expect(run.exitCode == 2, "\(run)")
        #expect(run.summary.sourceError?.contains("127.0.0.1:\(port): cannot listen") == true, "\(run)")
    }

    @Test("POST tasks with a bearer token; wrong token, oversized body and bad lines are answered; metrics are served")
    func httpSource() async throws {
        let folder = Paths.scratch()
        let port = Self.freePort()
        let metricsPort = port + 1
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              api:
                kind: http
                listen: 127.0.0.1:\(port)
                token: ${TASKHOST_TEST_TOKEN}
                maxBodyBytes: 2000
                executor: echo
            results: { path: \(folder)/results.jsonl }
            deadLetter: { path: \(folder)/dead.jsonl }
            metrics: { listen: 127.0.0.1:\(metricsPort) }
            """, in: folder, environment: ["TASKHOST_TEST_TOKEN": "s3cret"]
        ) { stop in
            let base = "http://127.0.0.1:\(port)"
            // Wait until it listens (a bounded number of tries).
            var up = false
            for _ in 0..<200 where !up {
                up = (try? await Self.request("http://127.0.0.1:\(metricsPort)/healthz"))?.status == 200
                if !up { try await Task.sleep(for: .milliseconds(25)) }
            }
            #expect(up)

            let unauthorized = try await Self.request(base + "/tasks", method: "POST", body: "{}", token: "wrong")
            #expect(unauthorized.status == 401)
            let big = String(repeating: "x", count: 3000)
            let tooLarge = try await Self.request(base + "/tasks", method: "POST", body: big, token: "s3cret")
            #expect(tooLarge.status == 413)
            let batch = """
                {"targetId": "a", "id": "one", "data": 1}
                {"targetId": "a", "data": 2
                {"targetId": "b", "id": "three", "data": 3}
                """
            let accepted = try await Self.request(base + "/tasks", method: "POST", body: batch, token: "s3cret")
            #expect(accepted.status == 202)
            #expect(accepted.body.contains(#""accepted":["one","three"]"#))
            #expect(accepted.body.contains(#""line":2"#))
            // Wait for both to finish, then look at the operations endpoints.
            var status = ""
            for _ in 0..<200 {
                status = try await Self.request("http://127.0.0.1:\(metricsPort)/status").body
                if status.contains(#""running":0"#) && status.contains(#""queued":0"#) { break }
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(status.contains(#""sources":{"api":3}"#))
            let metrics = try await Self.request("http://127.0.0.1:\(metricsPort)/metrics").body
            #expect(metrics.contains(#"taskhost_tasks_total{outcome="succeeded",executor="echo",source="api"} 2"#))
            #expect(metrics.contains(#"taskhost_tasks_total{outcome="rejected",source="api"} 1"#))
            #expect(metrics.contains("taskhost_running 0"))
            stop.request()
        }
        // The rejected line was answered (the 400's reasons) and is reported, not a failed run.
        #expect(run.summary.rejected == 1 && run.summary.rejectedAnswered == 1, "\(run)")
        #expect(run.exitCode == 0, "\(run)")
        let results = try PipelineTests.records(folder + "/results.jsonl")
        #expect(Set(results.map { $0["id"] as! String }) == ["one", "three"])
    }
}
