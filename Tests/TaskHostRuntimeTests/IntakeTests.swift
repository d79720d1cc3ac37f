import Foundation
import Synchronization
import TaskHostConfig
import TaskHostStore
import Testing

@testable import TaskHostRuntime

/// Back-pressure (a full queue refuses or pauses intake, the host runs on), readiness, and
/// idempotent enqueue (a producer's id names one task).
@Suite struct IntakeTests {
    typealias P = PipelineTests
    typealias H = HTTPSourceTests

    /// Polls `url` until `done` holds for its reply (a bounded number of tries).
    static func poll(
        _ url: String, method: String = "GET", body: String? = nil, until done: (H.Reply) -> Bool
    ) async throws -> H.Reply? {
        for _ in 0..<400 {
            if let reply = try? await H.request(url, method: method, body: body), done(reply) { return reply }
            try await Task.sleep(for: .milliseconds(25))
        }
        return nil
    }

    @Test("A full queue answers 503 with Retry-After, refuses a batch whole, and takes POSTs again once tasks finish")
    func fullQueueOverHTTP() async throws {
        let folder = Paths.scratch()
        let port = H.freePort()
        let metricsPort = port + 1
        // Every task waits for the file `go`: one target, so the queue fills up behind the first.
        let script = "while [ ! -f \(folder)/go ]; do sleep 0.02; done; cat"
        let padding = String(repeating: "p", count: 2000)
        let run = try await runInProcess(
            """
            executors:
              wait: { plugin: Command, config: { program: /bin/sh, args: ["-c", "\(script)"] } }
            sources:
              api: { kind: http, listen: "127.0.0.1:\(port)", executor: wait, maxBodyBytes: 4000000 }
            results: { path: \(folder)/results.jsonl }
            metrics: { listen: "127.0.0.1:\(metricsPort)" }
            queue: { path: \(folder)/queue.db, maxSizeMB: 1, dedupWindowMs: 0 }
            """, in: folder
        ) { stop in
            let base = "http://127.0.0.1:\(port)/tasks"
            let ready = try await Self.poll("http://127.0.0.1:\(metricsPort)/readyz") { $0.status == 200 }
            #expect(ready?.body.contains(#""api":"serving""#) == true, "\(String(describing: ready))")
            // Batches of 50 tasks (100 KB) until the queue is full.
            var refused: H.Reply?
            var batches = 0
            while refused == nil, batches < 40 {
                let lines = (0..<50).map { #"{"targetId": "t", "id": "b\#(batches)-\#($0)", "data": "\#(padding)"}"# }
                let reply = try await H.request(base, method: "POST", body: lines.joined(separator: "\n"))
                if reply.status == 503 { refused = reply } else { #expect(reply.status == 202, "\(reply)") }
                batches += 1
            }
            let full = try #require(refused, "the queue never filled up")
            #expect(full.headers["retry-after"] == "1", "\(full)")
            #expect(full.body.contains("the queue is full"), "\(full)")
            // The queue says why, until an append succeeds again.
            let readyz = try await H.request("http://127.0.0.1:\(metricsPort)/readyz")
            #expect(readyz.status == 503, "\(readyz)")
            #expect(readyz.body.contains(#""queue":"full""#), "\(readyz)")
            #expect(try await H.request("http://127.0.0.1:\(metricsPort)/livez").status == 200)
            let metrics = try await H.request("http://127.0.0.1:\(metricsPort)/metrics").body
            #expect(metrics.contains("taskhost_queue_full 1"), "\(metrics)")
            #expect(metrics.contains(#"taskhost_intake_refused_total{source="api",reason="queue_full"}"#), "\(metrics)")
            // Another batch that does not fit: 503 again, never a 400.
            let lines = (0..<50).map { #"{"targetId": "t", "id": "late-\#($0)", "data": "\#(padding)"}"# }
            let late = try await H.request(base, method: "POST", body: lines.joined(separator: "\n"))
            #expect(late.status == 503, "\(late)")
            // The tasks finish, compaction frees their pages: POSTs are taken again.
            try P.write("", to: folder + "/go")
            let again = try await Self.poll(base, method: "POST", body: #"{"targetId": "t", "id": "after"}"#) {
                $0.status == 202
            }
            #expect(again != nil)
            let readyAgain = try await Self.poll("http://127.0.0.1:\(metricsPort)/readyz") { $0.status == 200 }
            #expect(readyAgain != nil)
            // Wait until every task is done, then stop.
            _ = try await Self.poll("http://127.0.0.1:\(metricsPort)/status") {
                $0.body.contains(#""durableQueued":0"#) && $0.body.contains(#""running":0"#)
            }
            stop.request()
            // The refused batch: none of its tasks was queued.
            let ids = Set(try P.records(folder + "/results.jsonl").map { $0["id"] as! String })
            #expect(!ids.contains { $0.hasPrefix("b\(batches - 1)-") }, "a refused batch was partly queued")
            #expect(ids.contains("after"))
            #expect(!ids.contains { $0.hasPrefix("late-") }, "a refused batch was partly queued")
        }
        #expect(run.exitCode == 0, "\(run)")
        #expect(run.summary.queueError == nil, "\(run)")
    }

    @Test("/readyz names what is not ready: a source not serving yet, a full queue, a failed queue, a stop")
    func readiness() {
        let metrics = PipelineMetrics(durable: true, executors: ["e"], sources: ["api", "file"])
        let health = PipelineHealth(sources: ["api", "file"], metrics: metrics)
        let failure = Mutex<String?>(nil)
        let readiness = Readiness(
            health: health, queueFailure: { failure.withLock { $0 } }, durable: true, executors: (1, 1))
        func check(stopping: Bool = false) -> (Bool, String) {
            let (ready, body) = readiness.check(shuttingDown: stopping)
            return (ready, String(decoding: body, as: UTF8.self))
        }
        var (ready, body) = check()
        #expect(!ready)
        #expect(body.contains("source api is not serving yet"), "\(body)")
        health.set("api", .serving)
        health.set("file", .finished)
        (ready, body) = check()
        #expect(ready, "\(body)")
        #expect(body.contains(#""queue":"writable""#), "\(body)")
        health.setQueueFull(true)
        (ready, body) = check()
        #expect(!ready)
        #expect(body.contains("the queue is full"), "\(body)")
        health.setQueueFull(false)
        failure.withLock { $0 = "disk I/O error" }
        (ready, body) = check()
        #expect(!ready)
        #expect(body.contains("the queue failed: disk I/O error"), "\(body)")
        failure.withLock { $0 = nil }
        (ready, _) = check(stopping: true)
        #expect(!ready)
    }

    @Test("/livez, /healthz (its alias) and /readyz answer on the metrics address of a serving pipeline")
    func probes() async throws {
        let folder = Paths.scratch()
        let port = H.freePort()
        let metricsPort = port + 1
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              api: { kind: http, listen: "127.0.0.1:\(port)", executor: echo }
            metrics: { listen: "127.0.0.1:\(metricsPort)" }
            queue: memory
            """, in: folder
        ) { stop in
            let ready = try await Self.poll("http://127.0.0.1:\(metricsPort)/readyz") { $0.status == 200 }
            #expect(ready?.body.contains(#""ready":true"#) == true, "\(String(describing: ready))")
            #expect(ready?.body.contains(#""queue":"memory""#) == true, "\(String(describing: ready))")
            let live = try await H.request("http://127.0.0.1:\(metricsPort)/livez")
            #expect(live.status == 200 && live.body == "ok\n")
            #expect(try await H.request("http://127.0.0.1:\(metricsPort)/healthz").status == 200)
            stop.request()
        }
        #expect(run.exitCode == 0, "\(run)")
    }

    @Test("A task POSTed twice with the same id runs once; the duplicate is answered 200 with the task's state")
    func duplicateOverHTTP() async throws {
        let folder = Paths.scratch()
        let port = H.freePort()
        let metricsPort = port + 1
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              api: { kind: http, listen: "127.0.0.1:\(port)", executor: echo }
            results: { path: \(folder)/results.jsonl }
            metrics: { listen: "127.0.0.1:\(metricsPort)" }
            queue: { path: \(folder)/queue.db }
            """, in: folder
        ) { stop in
            _ = try await Self.poll("http://127.0.0.1:\(metricsPort)/readyz") { $0.status == 200 }
            let base = "http://127.0.0.1:\(port)/tasks"
            let task = #"{"targetId": 1, "id": "order-7", "data": 1}"#
            let first = try await H.request(base, method: "POST", body: task)
            #expect(first.status == 202, "\(first)")
            let second = try await H.request(base, method: "POST", body: task)
            #expect(second.status == 200, "\(second)")
            #expect(second.body.contains(#""id":"order-7""#) && second.body.contains(#""duplicate":true"#))
            // Once it finished: still a duplicate, with its final state.
            let final = try await Self.poll(base, method: "POST", body: task) {
                $0.body.contains(#""state":"succeeded""#)
            }
            #expect(final?.status == 200, "\(String(describing: final))")
            // In a batch: new tasks are accepted, duplicates listed.
            let batch = try await H.request(
                base, method: "POST", body: task + "\n" + #"{"targetId": 1, "id": "order-8"}"#)
            #expect(batch.status == 202, "\(batch)")
            #expect(batch.body.contains(#""accepted":["order-8"]"#), "\(batch)")
            #expect(batch.body.contains(#""duplicates":[{"line":1,"id":"order-7","state":"succeeded"}]"#), "\(batch)")
            _ = try await Self.poll("http://127.0.0.1:\(metricsPort)/status") {
                $0.body.contains(#""durableQueued":0"#)
            }
            stop.request()
        }
        #expect(run.exitCode == 0, "\(run)")
        let results = try P.records(folder + "/results.jsonl")
        #expect(
            results.filter { $0["id"] as? String == "order-7" && $0["status"] as? String == "succeeded" }.count == 1)
        #expect(results.filter { $0["status"] as? String == "duplicate" }.count == 3, "\(results)")
    }

    @Test("A file source's duplicates get a result line and are not queued again", arguments: ["durable", "memory"])
    func duplicatesInAFile(queue: String) async throws {
        let folder = Paths.scratch()
        try P.write(
            [
                #"{"targetId": 1, "id": "a"}"#, #"{"targetId": 2, "id": "a"}"#, #"{"targetId": 3, "id": "b"}"#,
                #"{"targetId": 4}"#,
            ]
            .joined(separator: "\n") + "\n", to: folder + "/in.jsonl")
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              in: { kind: file, path: \(folder)/in.jsonl, executor: echo }
            results: { path: \(folder)/results.jsonl }
            queue: \(queue == "memory" ? "memory" : "{ path: \(folder)/queue.db }")
            """, in: folder)
        #expect(run.exitCode == 0, "\(run)")
        let results = try P.records(folder + "/results.jsonl")
        #expect(results.count == 4, "\(results)")
        #expect(results.filter { $0["id"] as? String == "a" && $0["status"] as? String == "succeeded" }.count == 1)
        let duplicate = try #require(results.first { $0["status"] as? String == "duplicate" })
        #expect(duplicate["id"] as? String == "a")
        #expect(duplicate["targetId"] as? Int == 2)
    }

    @Test("An id stays taken for dedupWindowMs after its task finished, across runs; tasks show reads it")
    func dedupWindow() async throws {
        let folder = Paths.scratch()
        func config(_ file: Int, _ window: Int?) -> String {
            """
            executors:
              echo: { plugin: Echo }
            sources:
              in: { kind: file, path: \(folder)/in\(file).jsonl, executor: echo }
            results: { path: \(folder)/results.jsonl }
            queue: { path: \(folder)/queue.db, retainFinishedMs: 0\(window.map { ", dedupWindowMs: \($0)" } ?? "") }
            """
        }
        for file in 1...3 {
            try P.write(
                #"{"targetId": 1, "id": "once", "data": {"n": \#(file)}}"# + "\n", to: folder + "/in\(file).jsonl")
        }
        #expect(try await runInProcess(config(1, nil), in: folder).exitCode == 0)
        // Another file with the same id: within the window (default 24 h), a duplicate, although
        // the run's compaction deleted its payload (retainFinishedMs: 0).
        #expect(try await runInProcess(config(2, nil), in: folder).exitCode == 0)
        var statuses = try P.records(folder + "/results.jsonl").map { $0["status"] as! String }
        #expect(statuses == ["succeeded", "duplicate"])

        let loaded = try ConfigLoader.load(path: folder + "/pipeline.yaml", environment: [:])
        let shown = try #require(try QueueAdmin(config: loaded).task("once"))
        #expect(shown.state == .succeeded)
        #expect(shown.attempts == 1)
        #expect(shown.executor == "echo")
        #expect(shown.finishedAt != nil)
        #expect(try QueueAdmin(config: loaded).task("never") == nil)

        // A window of 0: the id is free once its task is final.
        #expect(try await runInProcess(config(3, 0), in: folder).exitCode == 0)
        statuses = try P.records(folder + "/results.jsonl").map { $0["status"] as! String }
        #expect(statuses == ["succeeded", "duplicate", "succeeded"])
    }

    @Test("tasks show: a queued task's state, a dead letter's attempts and last error")
    func showTask() async throws {
        let folder = Paths.scratch()
        try P.write(
            #"{"targetId": 1, "id": "bad"}"# + "\n" + #"{"targetId": 2}"# + "\n", to: folder + "/in.jsonl")
        let run = try await runInProcess(
            """
            retry: { maxAttempts: 2, initialDelayMs: 1 }
            executors:
              fail: { plugin: Command, config: { program: /bin/sh, args: ["-c", "echo nope >&2; exit 3"] } }
            sources:
              in: { kind: file, path: \(folder)/in.jsonl, executor: fail }
            results: { path: \(folder)/results.jsonl }
            queue: { path: \(folder)/queue.db }
            """, in: folder)
        #expect(run.exitCode == 1, "\(run)")
        let admin = try QueueAdmin(config: try ConfigLoader.load(path: folder + "/pipeline.yaml", environment: [:]))
        let bad = try #require(try admin.task("bad"))
        #expect(bad.state == .dead)
        #expect(bad.attempts == 2)
        #expect(bad.error?.isEmpty == false)
        #expect(bad.targetText == "1" && bad.targetIsInteger)
        // A task without an id is named SOURCE-SEQ, as in the results file.
        let second = try #require(try admin.task("in-2"))
        #expect(second.targetText == "2")
    }
}
