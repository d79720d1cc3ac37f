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
            queue: { postgres: { url: "${DATABASE_URL}", leaseMs: 5000, schema: \(schema) } }
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
}
