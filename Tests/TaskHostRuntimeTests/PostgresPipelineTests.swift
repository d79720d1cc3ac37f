import Foundation
import Testing

@testable import TaskHostRuntime

/// A real pipeline run on `queue: { postgres: … }` (one host), against the PostgreSQL that
/// `scripts/test.sh` starts; without it these tests fail and say so.
@Suite struct PostgresPipelineTests {
    static func databaseURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["TASKHOST_TEST_DATABASE_URL"], !url.isEmpty else {
            throw PostgresTestDatabaseMissing()
        }
        return url
    }

    struct PostgresTestDatabaseMissing: Error, CustomStringConvertible {
        var description: String {
            "TASKHOST_TEST_DATABASE_URL is not set: run the tests with scripts/test.sh, which starts a throwaway PostgreSQL"
        }
    }

    @Test("A pipeline on the PostgreSQL queue: every task final once, per-target FIFO, retries and dead letters")
    func aPipelineRunsOnPostgres() async throws {
        let url = try Self.databaseURL()
        let folder = Paths.scratch()
        let schema = "p_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
        var lines: [String] = []
        for i in 0..<300 {
            let target = i % 5 == 0 ? #""hot""# : String(i % 11)
            let data = i == 42 ? #""boom""# : #""\#(i)""#
            lines.append(#"{"targetId": \#(target), "id": "t\#(i)", "data": \#(data)}"#)
        }
        try PipelineTests.write(lines.joined(separator: "\n") + "\n", to: folder + "/tasks.jsonl")
        let run = try await runInProcess(
            """
            scheduler: { maxConcurrency: 4 }
            executors:
              echo: { plugin: Echo, config: { delayMs: 1, failOn: "\\"boom\\"" } }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: echo }
            retry: { maxAttempts: 3, backoff: fixed, initialDelayMs: 5 }
            results: { path: \(folder)/out/results.jsonl }
            deadLetter: { path: \(folder)/out/dead.jsonl }
            queue: { postgres: { url: "${DATABASE_URL}", leaseMs: 30000, schema: \(schema) } }
            """, in: folder, environment: ["DATABASE_URL": url])
        // 1: a task was dead-lettered (as on the other queues).
        #expect(run.exitCode == 1, "\(run)")
        #expect(run.summary.deadLettered == 1)
        #expect(run.summary.succeeded == 299)
        #expect(!run.log.contains { $0.hasPrefix("warning") || $0.hasPrefix("error") }, "\(run)")
        let records = try PipelineTests.records(folder + "/out/results.jsonl")
        #expect(records.count == 300, "\(run)")
        #expect(Set(records.map { $0["id"] as! String }).count == 300)
        let failed = records.filter { $0["status"] as? String == "deadLettered" }
        #expect(failed.map { $0["id"] as! String } == ["t42"])
        #expect(failed.first?["attempts"] as? Int == 3)
        #expect(try PipelineTests.records(folder + "/out/dead.jsonl").count == 1)
        // Integer targets come back as integers, string targets as strings.
        #expect(records.contains { $0["targetId"] as? String == "hot" })
        #expect(records.contains { $0["targetId"] as? Int == 3 })
        // Per target: in order of arrival, never overlapping; never more than the cap at once.
        let byTarget = Dictionary(grouping: records) { "\($0["targetId"]!)" }
        #expect(byTarget.count == 12)
        for (target, runs) in byTarget {
            let ordered = runs.sorted { ($0["startedAt"] as! Int) < ($1["startedAt"] as! Int) }
            let seqs = ordered.map { $0["seq"] as! Int }
            #expect(seqs == seqs.sorted(), "target \(target) started out of order")
            for (a, b) in zip(ordered, ordered.dropFirst()) {
                #expect((a["finishedAt"] as! Int) <= (b["startedAt"] as! Int), "target \(target) overlapped")
            }
        }
        var events: [(Int, Int)] = []
        for record in records {
            events.append((record["startedAt"] as! Int, 1))
            events.append((record["finishedAt"] as! Int, -1))
        }
        var running = 0
        var peak = 0
        for (_, change) in events.sorted(by: { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }) {
            running += change
            peak = max(peak, running)
        }
        #expect(peak <= 4)
        #expect(run.summary.leftQueued == 0)
        // The queue is empty afterwards, and the host left it (no lease for others to wait out).
        let psql = Process()
        psql.executableURL = URL(fileURLWithPath: "/usr/bin/psql")
        psql.arguments = [
            url, "-Atc",
            "SELECT (SELECT count(*) FROM \(schema).th_task) || ' ' || (SELECT count(*) FROM \(schema).th_dead) || ' ' || "
                + "(SELECT string_agg(state, ',') FROM \(schema).th_host); DROP SCHEMA \(schema) CASCADE",
        ]
        let pipe = Pipe()
        psql.standardOutput = pipe
        try psql.run()
        psql.waitUntilExit()
        let answer = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(answer.hasPrefix("0 1 dead"), "\(answer)")
    }

    /// Runs `sql` with psql against `url`; its output, trimmed.
    static func psql(_ url: String, _ sql: String) throws -> String {
        let psql = Process()
        psql.executableURL = URL(fileURLWithPath: "/usr/bin/psql")
        psql.arguments = [url, "-Atqc", sql]
        let pipe = Pipe()
        psql.standardOutput = pipe
        try psql.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        psql.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("A host whose lease ended: its late outcomes are refused and write no result line; it stops (exit code 3)")
    func aHostThatLostItsLeaseIsFencedOff() async throws {
        let url = try Self.databaseURL()
        let folder = Paths.scratch()
        let schema = "p_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
        let lines = (0..<6).map { #"{"targetId": "t\#($0 % 3)", "id": "a\#($0)", "data": \#($0)}"# }
        try PipelineTests.write(lines.joined(separator: "\n") + "\n", to: folder + "/tasks.jsonl")
        // Each attempt waits until the test lets it go (a file), so the takeover below happens
        // while the attempts run, whatever the machine's speed.
        let release = folder + "/go"
        let run = try await runInProcess(
            """
            scheduler: { maxConcurrency: 2 }
            executors:
              wait: { plugin: Command, config: { program: /bin/sh, args: ["-c", "while [ ! -e \(release) ]; do sleep 0.01; done; cat"] } }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: wait }
            results: { path: \(folder)/out/results.jsonl }
            queue: { postgres: { url: "${DATABASE_URL}", leaseMs: 60000, schema: \(schema) } }
            """, in: folder, environment: ["DATABASE_URL": url]
        ) { _ in
            var running = ""
            for _ in 0..<2000 {
                running = try Self.psql(url, "SELECT count(*) FROM \(schema).th_target WHERE state = 'running'")
                if running == "2" { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(running == "2")
            // What another host's reaper does once this host's lease ended, then a claim by that
            // host (a new fence): this host's claims are superseded.
            _ = try Self.psql(
                url,
                """
                UPDATE \(schema).th_host SET state = 'dead', lease_until = now() - interval '1 second';
                UPDATE \(schema).th_target SET state = 'ready', owner_host = NULL WHERE state = 'running';
                INSERT INTO \(schema).th_host (name, pid, max_concurrency, lease_until)
                  VALUES ('other', 1, 8, now() + interval '1 hour');
                UPDATE \(schema).th_target SET state = 'running', fence = fence + 1, head_attempt = head_attempt + 1,
                  owner_host = (SELECT max(host_id) FROM \(schema).th_host) WHERE state = 'ready';
                """)
            FileManager.default.createFile(atPath: release, contents: nil)
        }
        #expect(run.exitCode == 3, "\(run)")
        #expect(run.summary.queueError?.contains("lease ended") == true, "\(run)")
        #expect(run.log.contains { $0.contains("refused a stale outcome") }, "\(run)")
        // The superseded attempts wrote nothing; the other host's claims stand.
        let results = (try? PipelineTests.records(folder + "/out/results.jsonl")) ?? []
        #expect(results.isEmpty, "\(results)")
        #expect(
            try Self.psql(
                url,
                "SELECT count(*) FILTER (WHERE fence = 2) || ' ' || count(*) FROM \(schema).th_target"
                    + " WHERE state = 'running' AND owner_host = (SELECT max(host_id) FROM \(schema).th_host)") == "2 3"
        )
        _ = try Self.psql(url, "DROP SCHEMA \(schema) CASCADE")
    }

    /// Starts `taskhost run` with `environment` added to this process's, without waiting.
    static func host(_ config: String, in folder: String, environment: [String: String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: PipelineTests.binary)
        process.arguments = ["run", config, "--quiet", "--plugin-path", Paths.builtPlugins]
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        process.standardOutput = FileHandle.nullDevice
        let log = folder + "/" + (environment["RESULTS"] ?? "host") + ".log"
        FileManager.default.createFile(atPath: log, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: log)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return process
    }

    @Test("Three hosts on one database, one killed with -9 and restarted: every task once, per-target FIFO, no overlap")
    func threeHostsShareOneQueue() async throws {
        let url = try Self.databaseURL()
        let folder = Paths.scratch()
        let schema = "p_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
        let tasks = 3000
        let lines = (0..<tasks).map { #"{"targetId": "t\#($0 % 60)", "id": "m\#($0)", "data": \#($0)}"# }
        try PipelineTests.write(lines.joined(separator: "\n") + "\n", to: folder + "/tasks.jsonl")
        let queue = "queue: { postgres: { url: \"${DATABASE_URL}\", leaseMs: 4000, schema: \(schema) } }"
        let common = """
            scheduler: { maxConcurrency: 4 }
            executors:
              echo: { plugin: Echo, config: { delayMs: 2 } }
            results: { path: "${RESULTS}" }
            \(queue)
            """
        // The producer reads the file (and works); the workers have nothing of their own to read.
        try PipelineTests.write(
            common + "\nsources:\n  tasks: { kind: file, path: tasks.jsonl, executor: echo }\n",
            to: folder + "/producer.yaml")
        try PipelineTests.write(
            common + "\nsources:\n  none: { kind: stdin, executor: echo }\n", to: folder + "/worker.yaml")
        let producer = try Self.host(
            "producer.yaml", in: folder, environment: ["DATABASE_URL": url, "RESULTS": "out/a"])
        // The workers start once tasks are queued (a worker on an empty queue ends at once).
        for _ in 0..<2000 {
            if (try? Self.psql(url, "SELECT count(*) > 100 FROM \(schema).th_task")) == "t" { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        let env: (String) -> [String: String] = { ["DATABASE_URL": url, "RESULTS": "out/" + $0] }
        let victim = try Self.host("worker.yaml", in: folder, environment: env("b"))
        let steady = try Self.host("worker.yaml", in: folder, environment: env("c"))
        // Killed once it has written some results, while the others work on.
        let killed = await DurableQueueTests.kill(victim) { DurableQueueTests.size(folder + "/out/b") >= 20_000 }
        #expect(killed)
        let restarted = try Self.host("worker.yaml", in: folder, environment: env("d"))
        for process in [producer, steady, restarted] { process.waitUntilExit() }
        for process in [producer, steady, restarted] { #expect(process.terminationStatus == 0) }

        var records: [[String: Any]] = []
        for name in ["a", "b", "c", "d"] {
            var host = (try? PipelineTests.records(folder + "/out/" + name)) ?? []
            for index in host.indices { host[index]["host"] = name }
            records += host
        }
        let byId = Dictionary(grouping: records) { $0["id"] as! String }
        // Every task is final in the queue; a result line can miss only for the attempts the
        // killed host was running (at most its cap), between their commit and their line.
        #expect(try Self.psql(url, "SELECT count(*) FROM \(schema).th_task") == "0")
        #expect(byId.count > tasks - 4 && byId.count <= tasks, "\(byId.count) tasks have a result line")
        #expect(byId.values.allSatisfy { $0.count == 1 }, "a task has two result lines")
        #expect(records.allSatisfy { $0["status"] as? String == "succeeded" })
        // All three running hosts took part.
        #expect(Set(records.map { $0["host"] as! String }).isSuperset(of: ["a", "b", "c"]))
        // Per target, across hosts: in order of arrival, never two at once.
        for (target, runs) in Dictionary(grouping: records, by: { $0["targetId"] as! String }) {
            let ordered = runs.sorted { ($0["startedAt"] as? Int ?? 0) < ($1["startedAt"] as? Int ?? 0) }
            let seqs = ordered.map { $0["seq"] as! Int }
            #expect(seqs == seqs.sorted(), "target \(target) ran out of order")
            for (a, b) in zip(ordered, ordered.dropFirst()) {
                #expect((a["finishedAt"] as? Int ?? 0) <= (b["startedAt"] as? Int ?? 0), "target \(target) overlapped")
            }
        }
        #expect(try Self.psql(url, "SELECT string_agg(state, ',') FROM \(schema).th_host") == "dead,dead,dead,dead")
        _ = try Self.psql(url, "DROP SCHEMA \(schema) CASCADE")
    }

    @Test("A task during whose attempts hosts kept stopping is not run again: it is dead-lettered")
    func aTaskThatStopsHostsIsNotRunForEver() async throws {
        let url = try Self.databaseURL()
        let folder = Paths.scratch()
        let schema = "p_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
        try PipelineTests.write(#"{"targetId": "p", "id": "poison", "data": 1}"# + "\n", to: folder + "/tasks.jsonl")
        try PipelineTests.write("", to: folder + "/none.jsonl")
        let release = folder + "/go"
        let queue = "queue: { postgres: { url: \"${DATABASE_URL}\", leaseMs: 30000, schema: \(schema) } }"
        // The first host runs it, and is taken for dead during its attempt: what the reaper leaves
        // after hosts died during three attempts.
        let first = try await runInProcess(
            """
            scheduler: { maxConcurrency: 2 }
            executors:
              work: { plugin: Command, config: { program: /bin/sh, args: ["-c", "while [ ! -e \(release) ]; do sleep 0.01; done; cat"] } }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: work }
            retry: { maxAttempts: 3, initialDelayMs: 1 }
            results: { path: \(folder)/out/first.jsonl }
            \(queue)
            """, in: folder, environment: ["DATABASE_URL": url]
        ) { _ in
            var running = ""
            for _ in 0..<500 {
                running = try Self.psql(url, "SELECT count(*) FROM \(schema).th_target WHERE state = 'running'")
                if running == "1" { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(running == "1")
            _ = try Self.psql(
                url,
                """
                UPDATE \(schema).th_host SET state = 'dead';
                UPDATE \(schema).th_target SET state = 'ready', owner_host = NULL, head_attempt = 3, head_deaths = 3;
                """)
            FileManager.default.createFile(atPath: release, contents: nil)
        }
        #expect(first.exitCode == 3, "\(first)")
        // The next host would run it at once (Echo): it does not, and dead-letters it.
        let second = try await runInProcess(
            """
            executors:
              work: { plugin: Echo }
            sources:
              none: { kind: file, path: \(folder)/none.jsonl, executor: work }
            retry: { maxAttempts: 3 }
            results: { path: \(folder)/out/second.jsonl }
            deadLetter: { path: \(folder)/out/dead.jsonl }
            \(queue)
            """, in: folder, file: "second.yaml", environment: ["DATABASE_URL": url])
        #expect(second.exitCode == 1, "\(second)")
        let results = try PipelineTests.records(folder + "/out/second.jsonl")
        #expect(results.count == 1)
        #expect(results.first?["status"] as? String == "deadLettered")
        #expect(results.first?["attempts"] as? Int == 3)
        let dead = try PipelineTests.records(folder + "/out/dead.jsonl")
        #expect(dead.count == 1)
        #expect((dead.first?["error"] as? String)?.contains("stopped during 3 of its attempts") == true, "\(dead)")
        #expect(try Self.psql(url, "SELECT count(*) || ' ' || max(attempts) FROM \(schema).th_dead") == "1 3")
        #expect(try Self.psql(url, "SELECT state FROM \(schema).th_target") == "idle")
        _ = try Self.psql(url, "DROP SCHEMA \(schema) CASCADE")
    }
}
