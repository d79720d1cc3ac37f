import Foundation
import Testing

/// The logs of `taskhost run` on the real binary: what an operator's log shipper reads.
@Suite struct LogTests {
    typealias P = PipelineTests

    static func lines(_ text: String) -> [Substring] { text.split(separator: "\n") }

    static func object(_ line: Substring) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }

    @Test("JSON logs: every line of standard error is JSON, the summary included, with numbers as numbers")
    func everyLineJSON() async throws {
        let folder = Paths.scratch()
        try P.write(
            """
            {"targetId": 1, "data": 1}
            {"data": "no target"}
            not json at all
            {"targetId": 2, "data": 2}
            """, to: folder + "/in.jsonl")
        try P.write(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              in: { kind: file, path: \(folder)/in.jsonl, executor: echo }
            results: { path: \(folder)/results.jsonl }
            deadLetter: { path: \(folder)/dead.jsonl }
            queue: memory
            """, to: folder + "/pipeline.yaml")
        // Standard error is a pipe: JSON by default.
        let run = try await P.taskhost(["run", "pipeline.yaml"], in: folder)
        #expect(run.status == 1, "\(run.stderr)")
        let lines = Self.lines(run.stderr)
        #expect(lines.count >= 3, "\(run.stderr)")
        for line in lines {
            let object = Self.object(line)
            #expect(object != nil, "not JSON: \(line)")
            #expect((object?["time"] as? String)?.hasSuffix("Z") == true, "\(line)")
        }
        let rejected = lines.compactMap(Self.object).filter { $0["message"] as? String == "task rejected" }
        #expect(rejected.count == 2)
        #expect(rejected.map { $0["seq"] as? Int } == [2, 3], "seq is a number: \(rejected)")
        let summary = try #require(lines.compactMap(Self.object).last)
        #expect(summary["message"] as? String == "run finished")
        #expect(summary["tasks"] as? Int == 2)
        #expect(summary["succeeded"] as? Int == 2)
        #expect(summary["rejected"] as? Int == 2)
        #expect(summary["exitCode"] as? Int == 1)
        #expect(summary["seconds"] is Double)

        // An error before the run (a bad configuration) is a JSON line too.
        try P.write("executors: {", to: folder + "/bad.yaml")
        let bad = try await P.taskhost(["run", "bad.yaml"], in: folder)
        #expect(bad.status == 2)
        let error = try #require(Self.lines(bad.stderr).first.flatMap(Self.object), "\(bad.stderr)")
        #expect(error["level"] as? String == "error")
        #expect((error["message"] as? String)?.contains("bad.yaml") == true, "\(error)")
    }

    @Test("--log-format text, --log-level and their environment variables; a wrong value is refused")
    func formatAndLevel() async throws {
        let folder = Paths.scratch()
        try P.write(#"{"data": "no target"}"# + "\n" + #"{"targetId": 1}"# + "\n", to: folder + "/in.jsonl")
        try P.write(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              in: { kind: file, path: \(folder)/in.jsonl, executor: echo }
            queue: memory
            """, to: folder + "/pipeline.yaml")
        let text = try await P.taskhost(["run", "pipeline.yaml", "--log-format", "text"], in: folder)
        #expect(text.stderr.contains("task rejected"), "\(text.stderr)")
        #expect(text.stderr.contains("taskhost: 1 tasks in"), "\(text.stderr)")
        #expect(Self.lines(text.stderr).allSatisfy { Self.object($0) == nil }, "\(text.stderr)")

        let quiet = try await P.taskhost(["run", "pipeline.yaml", "--log-level", "error"], in: folder)
        #expect(!quiet.stderr.contains("task rejected"), "\(quiet.stderr)")

        let fromEnvironment = try await P.taskhost(
            ["run", "pipeline.yaml"], in: folder,
            environment: ["TASKHOST_LOG_FORMAT": "text", "TASKHOST_LOG_LEVEL": "error"])
        #expect(!fromEnvironment.stderr.contains("task rejected"), "\(fromEnvironment.stderr)")
        #expect(fromEnvironment.stderr.contains("taskhost: 1 tasks in"), "\(fromEnvironment.stderr)")

        let wrong = try await P.taskhost(
            ["run", "pipeline.yaml"], in: folder, environment: ["TASKHOST_LOG_LEVEL": "verbose"])
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("TASKHOST_LOG_LEVEL=verbose"), "\(wrong.stderr)")
    }

    @Test(
        "queue: memory writes results and dead letters as tasks finish, while the run goes on",
        arguments: ["memory", "durable"])
    func resultsWhileRunning(queue: String) async throws {
        let folder = Paths.scratch()
        let port = HTTPSourceTests.freePort()
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              api: { kind: http, listen: "127.0.0.1:\(port)", executor: echo }
            results: { path: \(folder)/results.jsonl }
            deadLetter: { path: \(folder)/dead.jsonl }
            \(queue == "memory" ? "queue: memory" : "")
            """, in: folder
        ) { stop in
            let url = "http://127.0.0.1:\(port)/tasks"
            var posted = false
            for _ in 0..<400 where !posted {
                let body = #"{"targetId": 1, "id": "a"}"# + "\n" + #"{"targetId": 2, "id": "b"}"# + "\n" + "not json"
                posted = (try? await HTTPSourceTests.request(url, method: "POST", body: body))?.status == 202
                if !posted { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(posted)
            // Both lines and the dead letter reach the files while the host runs (bounded wait).
            var lines = 0
            var dead = 0
            for _ in 0..<500 where lines < 2 || dead < 1 {
                try await Task.sleep(for: .milliseconds(10))
                lines = ((try? PipelineTests.records(folder + "/results.jsonl")) ?? []).count
                dead = ((try? PipelineTests.records(folder + "/dead.jsonl")) ?? []).count
            }
            #expect(lines == 2 && dead == 1, "results: \(lines), dead letters: \(dead), before the stop")
            stop.request()
        }
        #expect(run.summary.succeeded == 2, "\(run)")
    }
}
