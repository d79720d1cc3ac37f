import Foundation
import Logging
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostStore
import Testing

@testable import TaskHostRuntime

#if canImport(Glibc)
    import Glibc
#endif

/// The durable queue on the real binary, where the process is under test: kill -9, a task that
/// crashes the host, signals, the exit status of a queue it refuses, a host that the operator's
/// tools wake with SIGUSR1 (sent to the pid in the queue's lock file: in-process, the test runner's).
/// The runs that follow a kill or a signal are in-process. Serialized: the kill points are watched
/// from threads, and each test runs hosts of its own. The rest: ``DurableQueueInProcessTests``.
@Suite(.serialized) struct DurableQueueTests {
    typealias P = PipelineTests

    /// Starts `taskhost run` in `folder` without waiting for it.
    static func start(_ arguments: [String], in folder: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: P.binary)
        process.arguments = arguments + ["--plugin-path", Paths.builtPlugins]
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Watches a running host from a thread of its own (never the test's cooperative pool, which
    /// other tests may keep busy): kills it with SIGKILL once `condition` holds, or returns when it
    /// exits. Returns whether it was killed.
    static func kill(_ process: Process, when condition: @escaping @Sendable () -> Bool) async -> Bool {
        let host = UncheckedBox(process)
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var killed = false
                while host.value.isRunning {
                    if condition() {
                        Glibc.kill(host.value.processIdentifier, SIGKILL)
                        killed = true
                        break
                    }
                    usleep(500)
                }
                host.value.waitUntilExit()
                continuation.resume(returning: killed)
            }
        }
    }

    static func size(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
    }

    /// Opens a pipeline's queue the way the operator's tools do.
    static func queue(_ folder: String, config: String = "pipeline.yaml") throws -> DurableQueue {
        let loaded = try ConfigLoader.load(path: folder + "/" + config, environment: [:])
        var settings = loaded.queue!
        if !settings.path.hasPrefix("/") { settings.path = folder + "/" + settings.path }
        return try DurableQueue(settings: settings, host: false)
    }

    static func count(_ queue: DurableQueue, _ sql: String) throws -> Int {
        Int(try queue.transaction { db in try db.integer(sql) } ?? -1)
    }

    @Test("kill -9 at random points: every task finishes, none lost, re-runs only of running tasks, FIFO kept")
    func crashes() async throws {
        let seed =
            UInt64(ProcessInfo.processInfo.environment["TASKHOST_CRASH_SEED"] ?? "")
            ?? UInt64.random(in: 1...UInt64(UInt32.max))
        var random = SeededRandom(seed: seed)
        let folder = Paths.scratch()
        let tasks = 20_000
        let cap = 8
        var lines: [String] = []
        for n in 0..<tasks {
            lines.append(#"{"targetId": "t\#(n % 200)", "id": "task-\#(n)", "data": {"n": \#(n)}}"#)
        }
        try P.write(lines.joined(separator: "\n") + "\n", to: folder + "/tasks.jsonl")
        try P.write(
            """
            scheduler: { maxConcurrency: \(cap) }
            executors:
              archive: { plugin: TargetFile, config: { directory: out/by-target } }
            sources:
              tasks: { kind: file, path: tasks.jsonl, executor: archive }
            results: { path: out/results.jsonl }
            """, to: folder + "/pipeline.yaml")
        // A results line is about 190 bytes: kill at random points spread over the first half or so.
        let lineBytes = 110
        var kills = 0
        var points = (0..<4).map { _ in Int(random.next() % UInt64(tasks * 9 / 10)) * lineBytes }.sorted()
        while true {
            let process = try Self.start(["run", "pipeline.yaml", "--quiet"], in: folder)
            guard let point = points.first else {
                process.waitUntilExit()
                #expect(process.terminationStatus == 0, "seed \(seed)")
                break
            }
            points.removeFirst()
            let results = folder + "/out/results.jsonl"
            if await Self.kill(process, when: { Self.size(results) >= point }) { kills += 1 }
        }
        // Every kill point lies before 90% of the results: each one is reached while a host runs.
        #expect(kills == 4, "seed \(seed): \(kills) kills")

        // Every task succeeded (a task re-run after a kill may have two lines).
        let results = try P.records(folder + "/out/results.jsonl")
        let succeeded = Set(results.filter { $0["status"] as? String == "succeeded" }.map { $0["id"] as! String })
        #expect(succeeded.count == tasks, "seed \(seed)")

        // The side effects: each target's file lists its executions in order.
        var executions = 0
        for target in 0..<200 {
            let path = folder + "/out/by-target/t\(target).jsonl"
            let ran = try P.records(path).map { ($0["payload"] as! [String: Any])["n"] as! Int }
            executions += ran.count
            // Per-target FIFO across restarts: in order, a re-run only right after its first run.
            var collapsed: [Int] = []
            for n in ran where collapsed.last != n { collapsed.append(n) }
            let expected = Array(stride(from: target, to: tasks, by: 200))
            #expect(collapsed == expected, "seed \(seed): target t\(target) ran \(ran.prefix(20))...")
        }
        print("crash test: seed \(seed), \(kills) kills, \(executions - tasks) tasks ran twice")
        // Re-executions only of tasks that were running at a kill: at most the cap per kill.
        #expect(executions - tasks <= cap * kills, "seed \(seed): \(executions - tasks) re-runs over \(kills) kills")

        // No two executions of a target overlap (within each host's life, from the results).
        var byTarget: [String: [(Int, Int)]] = [:]
        for record in results {
            guard let start = record["startedAt"] as? Int, let end = record["finishedAt"] as? Int else { continue }
            byTarget[record["targetId"] as! String, default: []].append((start, end))
        }
        for (target, spans) in byTarget {
            let sorted = spans.sorted { $0.0 < $1.0 }
            for (a, b) in zip(sorted, sorted.dropFirst()) {
                #expect(a.1 <= b.0, "seed \(seed): two executions of \(target) overlap")
            }
        }
        // The queue agrees: nothing queued or running, every task succeeded once.
        let queue = try Self.queue(folder)
        #expect(try Self.count(queue, "SELECT count(*) FROM tasks WHERE state = 2") == tasks)
        #expect(try Self.count(queue, "SELECT count(*) FROM tasks WHERE state != 2") == 0)
    }

    @Test("SIGTERM: tasks cut off stay queued with their attempts, and the next run finishes them")
    func shutdownKeepsTasks() async throws {
        let folder = Paths.scratch()
        try P.write(
            (0..<6).map { #"{"targetId": "t\#($0 % 2)", "id": "k\#($0)", "data": "\#($0)"}"# }.joined(separator: "\n")
                + "\n",
            to: folder + "/tasks.jsonl")
        func config(_ program: String, _ args: String) -> String {
            """
            scheduler: { maxConcurrency: 2 }
            executors:
              slow: { plugin: Command, config: { program: \(program), args: [\(args)] } }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: slow }
            results: { path: \(folder)/results.jsonl }
            shutdown: { gracePeriodMs: 200 }
            """
        }
        try P.write(config("/bin/sleep", "\"30\""), to: folder + "/pipeline.yaml")
        let first = try await P.taskhost(["run", "pipeline.yaml", "--quiet"], in: folder) { process in
            while P.children(of: process, running: "sleep 30") < 2 {
                try? await Task.sleep(for: .milliseconds(20))
            }
            process.terminate()
        }
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stderr.contains(#""leftQueued":6"#), "\(first.stderr)")
        let queue = try Self.queue(folder)
        #expect(try Self.count(queue, "SELECT count(*) FROM tasks WHERE state = 0") == 6)
        #expect(try Self.count(queue, "SELECT count(*) FROM tasks WHERE state = 0 AND attempts = 1") == 2)

        // The next run needs no signal: in-process.
        let second = try await runInProcess(config("/bin/true", ""), in: folder)
        #expect(second.exitCode == 0, "\(second)")
        let results = try P.records(folder + "/results.jsonl")
        #expect(results.count == 6)
        #expect(results.allSatisfy { $0["status"] as? String == "succeeded" })
        // The two cut off in their first attempt run their second now; the file was not re-read.
        #expect(results.filter { $0["attempts"] as? Int == 2 }.count == 2)
        #expect(Set(results.map { $0["id"] as! String }).count == 6)
    }

    @Test("Graceful stops that cut off a task do not count as crashes: it is never given up for them")
    func stopsAreNotCrashes() async throws {
        let folder = Paths.scratch()
        try P.write(#"{"targetId": "t", "id": "long", "data": "1"}"# + "\n", to: folder + "/tasks.jsonl")
        func config(_ program: String, _ args: String) -> String {
            """
            executors:
              slow: { plugin: Command, config: { program: \(program), args: [\(args)] } }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: slow }
            results: { path: \(folder)/results.jsonl }
            deadLetter: { path: \(folder)/dead.jsonl }
            shutdown: { gracePeriodMs: 100 }
            """
        }
        try P.write(config("/bin/sleep", "\"31\""), to: folder + "/pipeline.yaml")
        for _ in 0..<4 {
            let run = try await P.taskhost(["run", "pipeline.yaml", "--quiet"], in: folder) { process in
                while P.children(of: process, running: "sleep 31") < 1 {
                    try? await Task.sleep(for: .milliseconds(20))
                }
                process.terminate()
            }
            #expect(run.status == 0, "\(run.stderr)")
        }
        let queue = try Self.queue(folder)
        #expect(
            try Self.count(queue, "SELECT count(*) FROM tasks WHERE state = 0 AND attempts = 4 AND crashes = 0") == 1)
        // The last run needs no signal: in-process.
        let last = try await runInProcess(config("/bin/true", ""), in: folder)
        #expect(last.exitCode == 0, "\(last)")
        #expect(((try? P.records(folder + "/dead.jsonl")) ?? []).isEmpty)
        let results = try P.records(folder + "/results.jsonl")
        #expect(results.count == 1)
        #expect(results.first?["status"] as? String == "succeeded")
        #expect(results.first?["attempts"] as? Int == 5)
    }

    @Test("A corrupted queue file is refused with its path and the remedy, and left unchanged")
    func corruptedFile() async throws {
        let folder = Paths.scratch()
        try P.write(#"{"targetId": 1}"# + "\n", to: folder + "/tasks.jsonl")
        try P.write(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: tasks.jsonl, executor: echo }
            queue: { path: state/queue.db }
            """, to: folder + "/pipeline.yaml")
        try FileManager.default.createDirectory(atPath: folder + "/state", withIntermediateDirectories: true)
        let garbage = String(repeating: "this is not an SQLite database. ", count: 200)
        try P.write(garbage, to: folder + "/state/queue.db")
        for command in [["run", "pipeline.yaml"], ["status", "pipeline.yaml"]] {
            let run = try await P.taskhost(command, in: folder)
            #expect(run.status == 2)
            #expect(run.stderr.contains("state/queue.db"), "\(run.stderr)")
            #expect(run.stderr.contains("not a database") || run.stderr.contains("corrupted"), "\(run.stderr)")
            #expect(run.stderr.contains("restore it from a backup"), "\(run.stderr)")
        }
        #expect(try String(contentsOfFile: folder + "/state/queue.db", encoding: .utf8) == garbage)
    }

    @Test("A queue that cannot be created or written is refused with the path and what to do")
    func unwritable() async throws {
        let folder = Paths.scratch()
        try P.write(#"{"targetId": 1}"# + "\n", to: folder + "/tasks.jsonl")
        try P.write("a file, not a folder", to: folder + "/blocked")
        try P.write(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: tasks.jsonl, executor: echo }
            queue: { path: blocked/queue.db }
            """, to: folder + "/pipeline.yaml")
        let run = try await P.taskhost(["run", "pipeline.yaml"], in: folder)
        #expect(run.status == 2)
        #expect(run.stderr.contains("pipeline.yaml:5"), "\(run.stderr)")
        #expect(run.stderr.contains("blocked/queue.db"), "\(run.stderr)")
        #expect(run.stderr.contains("set queue.path to a writable place"), "\(run.stderr)")
        if getuid() != 0 {
            // Permissions (root ignores them).
            try FileManager.default.removeItem(atPath: folder + "/blocked")
            try FileManager.default.createDirectory(atPath: folder + "/blocked", withIntermediateDirectories: true)
            try P.write("", to: folder + "/blocked/queue.db")
            chmod(folder + "/blocked/queue.db", 0o444)
            let denied = try await P.taskhost(["run", "pipeline.yaml"], in: folder)
            #expect(denied.status == 2)
            #expect(denied.stderr.contains("cannot write the queue file"), "\(denied.stderr)")
        }
    }

    @Test("Operators work on a running host: enqueue wakes it, park holds a target, release resumes it")
    func operateWhileRunning() async throws {
        let folder = Paths.scratch()
        let port = HTTPSourceTests.freePort()
        try P.write("", to: folder + "/tasks.jsonl")
        try P.write(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: tasks.jsonl, follow: true, executor: echo }
            results: { path: results.jsonl }
            metrics: { listen: "127.0.0.1:\(port)" }
            """, to: folder + "/pipeline.yaml")
        let host = try Self.start(["run", "pipeline.yaml", "--quiet"], in: folder)
        defer { if host.isRunning { Glibc.kill(host.processIdentifier, SIGKILL) } }
        func results() -> [[String: Any]] { (try? P.records(folder + "/results.jsonl")) ?? [] }
        func waitFor(_ count: Int) async throws {
            for _ in 0..<500 where results().count < count { try await Task.sleep(for: .milliseconds(10)) }
        }
        // Wait until the host holds the queue's lock.
        for _ in 0..<500 {
            if try await P.taskhost(["status", "pipeline.yaml"], in: folder).stdout.contains("running, pid") { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        let status = try await P.taskhost(["status", "pipeline.yaml"], in: folder)
        #expect(status.stdout.contains("running, pid \(host.processIdentifier)"), "\(status.stdout)")

        try P.write(#"{"targetId": "a", "id": "e1"}"# + "\n", to: folder + "/more.jsonl")
        let enqueued = try await P.taskhost(["enqueue", "pipeline.yaml", "more.jsonl"], in: folder)
        #expect(enqueued.status == 0, "\(enqueued.stderr)")
        try await waitFor(1)
        #expect(results().map { $0["id"] as! String } == ["e1"])

        let parked = try await P.taskhost(["targets", "pipeline.yaml", "park", "a"], in: folder)
        #expect(parked.stdout.contains("parked (applied by the running host"), "\(parked.stdout)")
        try P.write(
            #"{"targetId": "a", "id": "e2"}"# + "\n" + #"{"targetId": "b", "id": "e3"}"# + "\n",
            to: folder + "/more.jsonl")
        _ = try await P.taskhost(["enqueue", "pipeline.yaml", "more.jsonl"], in: folder)
        try await waitFor(2)
        #expect(results().map { $0["id"] as! String } == ["e1", "e3"])
        let held = try await P.taskhost(["status", "pipeline.yaml", "--json"], in: folder)
        #expect(held.stdout.contains(#""parkedTargets":["a"]"#), "\(held.stdout)")
        #expect(held.stdout.contains(#""queued":1"#), "\(held.stdout)")
        // The queue's depth is served with the host's metrics and status.
        let metrics = try await HTTPSourceTests.request("http://127.0.0.1:\(port)/metrics")
        #expect(metrics.body.contains("taskhost_durable_queued 1"), "\(metrics.body)")
        let live = try await HTTPSourceTests.request("http://127.0.0.1:\(port)/status")
        #expect(live.body.contains(#""durableQueued":1"#), "\(live.body)")

        let released = try await P.taskhost(["targets", "pipeline.yaml", "release", "a"], in: folder)
        #expect(released.stdout.contains("released"), "\(released.stdout)")
        try await waitFor(3)
        #expect(results().map { $0["id"] as! String } == ["e1", "e3", "e2"])

        // Drain: a parked target's queued tasks become dead letters; the target goes on after.
        _ = try await P.taskhost(["targets", "pipeline.yaml", "park", "c"], in: folder)
        try P.write(
            #"{"targetId": "c", "id": "d1"}"# + "\n" + #"{"targetId": "c", "id": "d2"}"# + "\n",
            to: folder + "/more.jsonl")
        _ = try await P.taskhost(["enqueue", "pipeline.yaml", "more.jsonl"], in: folder)
        let drained = try await P.taskhost(["targets", "pipeline.yaml", "drain", "c"], in: folder)
        #expect(drained.stdout.contains("drained 2 queued tasks"), "\(drained.stdout)")
        try P.write(#"{"targetId": "c", "id": "d3"}"# + "\n", to: folder + "/more.jsonl")
        _ = try await P.taskhost(["enqueue", "pipeline.yaml", "more.jsonl"], in: folder)
        try await waitFor(4)
        #expect(results().map { $0["id"] as! String } == ["e1", "e3", "e2", "d3"])
        let letters = try await P.taskhost(["dead-letters", "pipeline.yaml", "list"], in: folder)
        #expect(letters.stdout.components(separatedBy: "drained by operator").count == 3, "\(letters.stdout)")
        host.terminate()
        host.waitUntilExit()
        #expect(host.terminationStatus == 0)
    }

    @Test("HTTP: every task answered 202 survives kill -9 and runs after the restart")
    func httpAcknowledgedSurvives() async throws {
        let folder = Paths.scratch()
        let port = HTTPSourceTests.freePort()
        try P.write(
            """
            executors:
              echo: { plugin: Echo, config: { delayMs: 20 } }
            sources:
              api: { kind: http, listen: "127.0.0.1:\(port)", executor: echo }
            results: { path: \(folder)/results.jsonl }
            """, to: folder + "/pipeline.yaml")
        let host = try Self.start(["run", "pipeline.yaml", "--quiet"], in: folder)
        defer { if host.isRunning { Glibc.kill(host.processIdentifier, SIGKILL) } }
        let url = "http://127.0.0.1:\(port)/tasks"
        for _ in 0..<500 {
            if (try? await HTTPSourceTests.request(url, method: "POST", body: "{}")) != nil { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        // 8 clients post concurrently (one task per request, on 4 targets); then kill -9 at once.
        let accepted = try await withThrowingTaskGroup(of: [String].self) { group in
            for client in 0..<8 {
                group.addTask {
                    var ids: [String] = []
                    for n in 0..<25 {
                        let id = "h\(client)-\(n)"
                        let reply = try await HTTPSourceTests.request(
                            url, method: "POST", body: #"{"targetId": \#(n % 4), "id": "\#(id)"}"#)
                        if reply.status == 202 { ids.append(id) }
                    }
                    return ids
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        Glibc.kill(host.processIdentifier, SIGKILL)
        host.waitUntilExit()
        #expect(accepted.count == 200)
        let ranBefore = Set(((try? P.records(folder + "/results.jsonl")) ?? []).map { $0["id"] as! String })
        #expect(ranBefore.count < 200, "the kill came after every task ran: nothing was tested")

        // The restart needs no signal: in-process, stopped once every accepted task ran.
        let config = try String(contentsOfFile: folder + "/pipeline.yaml", encoding: .utf8)
        try await runInProcess(config, in: folder) { stop in
            var ran = Set<String>()
            for _ in 0..<1000 where !Set(accepted).isSubset(of: ran) {
                try await Task.sleep(for: .milliseconds(10))
                ran = Set(((try? P.records(folder + "/results.jsonl")) ?? []).compactMap { $0["id"] as? String })
            }
            stop.request()
        }
        let ran = Set(((try? P.records(folder + "/results.jsonl")) ?? []).compactMap { $0["id"] as? String })
        #expect(Set(accepted).isSubset(of: ran), "lost: \(Set(accepted).subtracting(ran).sorted().prefix(10))")
    }

    @Test(
        "Integer and string targets on the command line: 42 and '\"42\"' are two targets, kept apart in status and JSON"
    )
    func targetKinds() async throws {
        let folder = Paths.scratch()
        try P.write(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: tasks.jsonl, executor: echo }
            """, to: folder + "/pipeline.yaml")
        try P.write(
            #"{"targetId": 42, "id": "int"}"# + "\n" + #"{"targetId": "42", "id": "str"}"# + "\n",
            to: folder + "/more.jsonl")
        try P.write("", to: folder + "/tasks.jsonl")
        let enqueued = try await P.taskhost(["enqueue", "pipeline.yaml", "more.jsonl"], in: folder)
        #expect(enqueued.status == 0, "\(enqueued.stderr)")

        // A number names the integer target, whatever string targets the queue holds.
        let parkInteger = try await P.taskhost(["targets", "pipeline.yaml", "park", "42"], in: folder)
        #expect(parkInteger.stdout == "42: parked\n", "\(parkInteger.stdout)")
        var status = try await P.taskhost(["status", "pipeline.yaml", "--json"], in: folder)
        #expect(status.stdout.contains(#""parkedTargets":[42]"#), "\(status.stdout)")
        // A JSON string names the string target; it is not parked.
        let releaseString = try await P.taskhost(["targets", "pipeline.yaml", "release", #""42""#], in: folder)
        #expect(releaseString.status == 1)
        #expect(releaseString.stdout.hasPrefix(#""42": "#), "\(releaseString.stdout)")
        let parkString = try await P.taskhost(["targets", "pipeline.yaml", "park", #""42""#], in: folder)
        #expect(parkString.status == 0, "\(parkString.stdout)")
        status = try await P.taskhost(["status", "pipeline.yaml", "--json"], in: folder)
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any], "\(status.stdout)")
        let parked = try #require(object["parkedTargets"] as? [Any])
        #expect(parked.compactMap { $0 as? Int } == [42], "\(status.stdout)")
        #expect(parked.compactMap { $0 as? String } == ["42"], "\(status.stdout)")
        // Text: the integer bare, the string that reads as a number quoted, as they are typed.
        let text = try await P.taskhost(["status", "pipeline.yaml"], in: folder)
        #expect(text.stdout.contains(#"parked:       2: "#), "\(text.stdout)")
        #expect(text.stdout.contains("42") && text.stdout.contains(#""42""#), "\(text.stdout)")
        // Releasing the integer leaves the string parked.
        let releaseInteger = try await P.taskhost(["targets", "pipeline.yaml", "release", "42"], in: folder)
        #expect(releaseInteger.status == 0, "\(releaseInteger.stdout)")
        status = try await P.taskhost(["status", "pipeline.yaml", "--json"], in: folder)
        #expect(status.stdout.contains(#""parkedTargets":["42"]"#), "\(status.stdout)")
        // A plain name needs no quotes.
        let plain = try await P.taskhost(["targets", "pipeline.yaml", "park", "app_android"], in: folder)
        #expect(plain.stdout == "app_android: parked\n", "\(plain.stdout)")
    }

    @Test("A task that crashes the host runs out of attempts and is dead-lettered, inline or not; the rest run")
    func poisonTask() async throws {
        // "poison" aborts the host inside an attempt that would finish inline (journaled, not
        // leased); "poison-later" aborts it 2 ms after its attempt went pending (leased).
        let folder = try Self.crashPipeline(
            (0..<20).map { i -> String in
                let data = i == 5 ? #""poison""# : i == 9 ? #""poison-later""# : "\(i)"
                return #"{"targetId": \#(i % 4), "id": "t\#(i)", "data": \#(data)}"#
            })
        // No retries are configured (one attempt), yet a task a crash cuts off runs again: a task
        // is given up only once the host died during 3 of its attempts.
        let (crashes, last) = try await Self.runUntilNoCrash(folder, limit: 12)
        // Each crash cut off one attempt of a poison task, and each gets 3: 6 crashes, then a run
        // that ends (with status 1: tasks were dead-lettered).
        #expect(crashes == 6)
        #expect(last?.signalled == false && last?.status == 1, "\(last?.stderr ?? "")")
        // Each poison task ran exactly attempts 1, 2 and 3: a crash counts, and nothing runs a 4th.
        let ran = try String(contentsOfFile: folder + "/attempts.log", encoding: .utf8).split(separator: "\n")
        #expect(
            ran.sorted() == [
                #""poison" 1"#, #""poison" 2"#, #""poison" 3"#, #""poison-later" 1"#,
                #""poison-later" 2"#, #""poison-later" 3"#,
            ])
        let dead = try P.records(folder + "/dead.jsonl")
        #expect(Set(dead.compactMap { $0["id"] as? String }) == ["t5", "t9"])
        for record in dead {
            #expect(record["attempts"] as? Int == 3)
            #expect(
                (record["error"] as? String)?.contains("the host died during 3 of its attempts") == true, "\(record)")
        }
        let succeeded = try P.records(folder + "/results.jsonl").filter { $0["status"] as? String == "succeeded" }
        #expect(Set(succeeded.compactMap { $0["id"] as? String }).count == 18)
    }

    @Test("A task that only ran beside a task that crashes the host is not given up with it")
    func innocentBesidePoison() async throws {
        // "slow" runs 500 ms inline, while "poison-later" crashes the host 2 ms after it starts.
        let folder = try Self.crashPipeline([
            #"{"targetId": 1, "id": "p", "data": "poison-later"}"#,
            #"{"targetId": 2, "id": "s", "data": "slow"}"#,
        ])
        let (crashes, _) = try await Self.runUntilNoCrash(folder, limit: 8)
        #expect(crashes == 3)
        let dead = try P.records(folder + "/dead.jsonl")
        #expect(dead.compactMap { $0["id"] as? String } == ["p"])
        let results = try P.records(folder + "/results.jsonl")
        #expect(results.contains { $0["id"] as? String == "s" && $0["status"] as? String == "succeeded" }, "\(results)")
        // Counted once with the culprit, then run alone: never counted again.
        let queue = try Self.queue(folder)
        #expect(try Self.count(queue, "SELECT crashes FROM tasks WHERE task_id = 's'") <= 1)
        #expect(try Self.count(queue, "SELECT crashes FROM tasks WHERE task_id = 'p'") == 3)
    }

    @Test("A second SIGTERM ends a run whose executor holds every thread: the process exits, the tasks stay queued")
    func secondSignalWithBlockedThreads() async throws {
        // More blocked tasks than the host has threads for tasks: nothing of the run can progress.
        let blocked = ProcessInfo.processInfo.activeProcessorCount + 2
        let folder = try Self.crashPipeline(
            (0..<blocked).map { #"{"targetId": \#($0), "id": "h\#($0)", "data": "hang"}"# })
        // Standard error goes to a file, read while the host runs: each signal is sent once the
        // host has answered the one before (signals sent together may arrive as one).
        let process = Process()
        process.executableURL = URL(fileURLWithPath: P.binary)
        process.arguments = ["run", "pipeline.yaml", "--quiet", "--plugin-path", Paths.builtPlugins]
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        process.environment = ProcessInfo.processInfo.environment.merging([
            "TASKHOST_CRASH_LOG": folder + "/attempts.log", "SWIFT_BACKTRACE": "enable=no",
        ]) { $1 }
        _ = FileManager.default.createFile(atPath: folder + "/stderr.log", contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: folder + "/stderr.log"))
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        func stderr() -> String { (try? String(contentsOfFile: folder + "/stderr.log", encoding: .utf8)) ?? "" }
        // Each wait is bounded: the test fails rather than hangs.
        func wait(for condition: () -> Bool) async {
            for _ in 0..<3000 where !condition() { try? await Task.sleep(for: .milliseconds(10)) }
        }
        await wait { FileManager.default.fileExists(atPath: folder + "/attempts.log") }
        process.terminate()
        await wait { stderr().contains("stopping: intake stopped") }
        process.terminate()
        await wait { !process.isRunning }
        if process.isRunning { _ = Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        #expect(process.terminationReason == .exit, "\(stderr())")
        #expect(process.terminationStatus == 128 + SIGTERM, "\(stderr())")
        #expect(stderr().contains("did not end within 3 s of the second signal"), "\(stderr())")
        // Nothing was lost: every task is still in the queue.
        let queue = try Self.queue(folder)
        #expect(try Self.count(queue, "SELECT count(*) FROM tasks") == blocked)
    }

    /// A scratch folder with the crash fixture (from a plugin folder of its own: a shared /tmp
    /// would be refused), these task lines and a pipeline that runs them through it.
    static func crashPipeline(_ lines: [String]) throws -> String {
        let folder = Paths.scratch()
        let plugins = folder + "/plugins"
        try FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: try Compiler.fixture("crash_host"), toPath: plugins + "/libcrash.so")
        try P.write(lines.joined(separator: "\n") + "\n", to: folder + "/tasks.jsonl")
        try P.write(
            """
            executors:
              buggy: { plugin: \(plugins)/libcrash.so }
            sources:
              tasks: { kind: file, path: tasks.jsonl, executor: buggy }
            results: { path: results.jsonl }
            deadLetter: { path: dead.jsonl }
            """, to: folder + "/pipeline.yaml")
        return folder
    }

    /// Runs the crash pipeline again while the host dies, at most `limit` times: how many runs
    /// died, and the last run. The fixture logs each attempt it starts to attempts.log.
    static func runUntilNoCrash(_ folder: String, limit: Int) async throws -> (crashes: Int, last: P.Run?) {
        let environment = ["TASKHOST_CRASH_LOG": folder + "/attempts.log", "SWIFT_BACKTRACE": "enable=no"]
        var crashes = 0
        var last: P.Run?
        for _ in 0..<limit {
            let run = try await P.taskhost(["run", "pipeline.yaml", "--quiet"], in: folder, environment: environment)
            last = run
            guard run.signalled else { break }
            crashes += 1
        }
        return (crashes, last)
    }

    @Test("A backoff deadline and the attempt count survive kill -9: the retry waits out the rest of the delay")
    func backoffSurvivesCrash() async throws {
        let folder = Paths.scratch()
        try P.write(#"{"targetId": 1, "id": "flaky"}"# + "\n", to: folder + "/tasks.jsonl")
        let marker = folder + "/marker"
        let config = """
            executors:
              flaky:
                plugin: Command
                config: { program: /bin/sh, args: ["-c", "test -e \(marker) && exit 0; touch \(marker); exit 1"] }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: flaky }
            results: { path: \(folder)/results.jsonl }
            retry: { maxAttempts: 3, backoff: fixed, initialDelayMs: 3000 }
            """
        try P.write(config, to: folder + "/pipeline.yaml")
        let host = try Self.start(["run", "pipeline.yaml", "--quiet"], in: folder)
        // Kill the host once the failed first attempt and its deadline are committed.
        let deadline = Mutex<Int64>(0)
        let killed = await Self.kill(host) {
            guard FileManager.default.fileExists(atPath: folder + "/.taskhost/pipeline/queue.db"),
                let queue = try? Self.queue(folder),
                let notBefore = try? queue.transaction({ db in
                    try db.integer("SELECT not_before FROM tasks WHERE state = 0 AND attempts = 1")
                })
            else { return false }
            deadline.withLock { $0 = notBefore }
            return true
        }
        #expect(killed)
        let notBefore = deadline.withLock { $0 }
        #expect(notBefore > 0)
        #expect(Self.size(folder + "/results.jsonl") == 0)

        // The restart needs no signal: in-process.
        let rerun = try await runInProcess(config, in: folder)
        #expect(rerun.exitCode == 0, "\(rerun)")
        let results = try P.records(folder + "/results.jsonl")
        #expect(results.count == 1)
        #expect(results.first?["attempts"] as? Int == 2)
        let started = (results.first?["startedAt"] as? Int ?? 0) / 1_000_000
        #expect(Int64(started) >= notBefore, "the retry started before its deadline")
    }

    @Test("A spool batch cut by kill -9 resumes from its checkpoint and is moved to done/ once all ran")
    func spoolSurvivesCrash() async throws {
        let folder = Paths.scratch()
        try FileManager.default.createDirectory(atPath: folder + "/spool", withIntermediateDirectories: true)
        try P.write(
            (0..<400).map { #"{"targetId": \#($0 % 4), "id": "s\#($0)", "data": \#($0)}"# }.joined(separator: "\n")
                + "\n", to: folder + "/spool/batch-1.jsonl")
        func config(_ delay: Int) -> String {
            """
            executors:
              echo: { plugin: Echo, config: { delayMs: \(delay) } }
            sources:
              spool: { kind: directory, path: \(folder)/spool, executor: echo }
            results: { path: \(folder)/results.jsonl }
            """
        }
        try P.write(config(20), to: folder + "/pipeline.yaml")
        let host = try Self.start(["run", "pipeline.yaml", "--quiet"], in: folder)
        #expect(await Self.kill(host) { Self.size(folder + "/results.jsonl") >= 40 * 150 })
        #expect(
            FileManager.default.fileExists(atPath: folder + "/spool/batch-1.jsonl"),
            "\((try? FileManager.default.subpathsOfDirectory(atPath: folder)) ?? []) \(Self.size(folder + "/results.jsonl"))"
        )

        // The restart needs no signal: in-process, stopped once the batch is done.
        try await runInProcess(config(0), in: folder) { stop in
            for _ in 0..<1000 where !FileManager.default.fileExists(atPath: folder + "/spool/done/batch-1.jsonl") {
                try await Task.sleep(for: .milliseconds(10))
            }
            stop.request()
        }
        #expect(FileManager.default.fileExists(atPath: folder + "/spool/done/batch-1.jsonl"))
        let ids = Set(try P.records(folder + "/results.jsonl").map { $0["id"] as! String })
        #expect(ids.count == 400)
    }
}

/// The durable queue with the host in-process (the operator's tools, if any, on the real binary
/// while no host runs): restarts, schema migration, a full queue, dead letters, the feed by target,
/// retention. Not serialized: these watch no process.
@Suite struct DurableQueueInProcessTests {
    typealias P = PipelineTests
    typealias D = DurableQueueTests

    @Test("A run lets its durable queue go when it returns, though its caller keeps the stop: the lock is free again")
    func runReleasesTheQueue() async throws {
        let folder = Paths.scratch()
        try P.write(#"{"targetId": 1, "id": "a"}"# + "\n", to: folder + "/tasks.jsonl")
        try P.write(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: echo }
            """, to: folder + "/pipeline.yaml")
        let config = try ConfigLoader.load(path: folder + "/pipeline.yaml", environment: [:])
        let settings = try #require(config.queue)
        // As the executable keeps it, in its signal handlers, for the life of the process.
        let stop = PipelineStop()
        // The lock goes with the queue's last reference, which a commit thread may hold a moment
        // after the run returned.
        func lockFreed() async throws -> Bool {
            var tries = 0
            while try DurableQueue(settings: settings, host: false).hostPID() != nil, tries < 1000 {
                try await Task.sleep(for: .milliseconds(5))
                tries += 1
            }
            return try DurableQueue(settings: settings, host: false).hostPID() == nil
        }
        // Twice in one process: the second host would be refused if the first one's queue were open.
        for _ in 0..<2 {
            do {
                let pipeline = try buildPipeline(configuration: config, loader: loader(), logger: LogRecorder().logger)
                #expect(try DurableQueue(settings: settings, host: false).hostPID() == getpid())
                let summary = await pipeline.run(stop: stop)
                #expect(summary.exitCode == 0, "\(summary)")
            }
            #expect(try await lockFreed())
        }
        withExtendedLifetime(stop) {}
    }

    @Test("A spool batch cut by a stop leaves the queue free: the next run in the same process finishes it")
    func spoolStoppedMidBatch() async throws {
        let folder = Paths.scratch()
        try FileManager.default.createDirectory(atPath: folder + "/spool", withIntermediateDirectories: true)
        try P.write(
            (0..<40).map { #"{"targetId": 1, "id": "m\#($0)", "data": \#($0)}"# }.joined(separator: "\n") + "\n",
            to: folder + "/spool/batch.jsonl")
        func config(_ delay: Int) -> String {
            """
            executors:
              echo: { plugin: Echo, config: { delayMs: \(delay) } }
            sources:
              spool: { kind: directory, path: \(folder)/spool, executor: echo }
            results: { path: \(folder)/results.jsonl }
            shutdown: { gracePeriodMs: 0 }
            """
        }
        // Stopped once some of the batch ran: its tracker is still open when the run returns.
        try await runInProcess(config(20), in: folder) { stop in
            for _ in 0..<1000 where D.size(folder + "/results.jsonl") == 0 {
                try await Task.sleep(for: .milliseconds(5))
            }
            stop.request()
        }
        #expect(FileManager.default.fileExists(atPath: folder + "/spool/batch.jsonl"))
        try await runInProcess(config(0), in: folder) { stop in
            for _ in 0..<1000 where !FileManager.default.fileExists(atPath: folder + "/spool/done/batch.jsonl") {
                try await Task.sleep(for: .milliseconds(5))
            }
            stop.request()
        }
        #expect(FileManager.default.fileExists(atPath: folder + "/spool/done/batch.jsonl"))
        let ids = Set(try P.records(folder + "/results.jsonl").map { $0["id"] as! String })
        #expect(ids.count == 40)
    }

    @Test("A queue of the previous schema is migrated in place and keeps its tasks")
    func schemaMigration() async throws {
        let folder = Paths.scratch()
        try P.write(#"{"targetId": 1, "id": "a"}"# + "\n", to: folder + "/tasks.jsonl")
        let config = """
            executors:
              noop: { plugin: Noop }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: noop }
            results: { path: \(folder)/results.jsonl }
            """
        let first = try await runInProcess(config, in: folder)
        #expect(first.exitCode == 0, "\(first)")
        // Back to schema 1 (no crash counts), with a queued task.
        do {
            let queue = try D.queue(folder)
            try queue.transaction { db in
                try db.execute("ALTER TABLE tasks DROP COLUMN crashes; PRAGMA user_version = 1")
                try db.run("UPDATE tasks SET state = 0, attempts = 1")
            }
        }
        let second = try await runInProcess(config, in: folder)
        #expect(second.exitCode == 0, "\(second)")
        let queue = try D.queue(folder)
        #expect(try D.count(queue, "PRAGMA user_version") == Int(DurableQueue.schemaVersion))
        // Schema 3: a producer's id is unique.
        #expect(try D.count(queue, "SELECT count(*) FROM sqlite_master WHERE name = 'tasks_by_task_id'") == 1)
        #expect(
            try D.count(queue, "SELECT count(*) FROM tasks WHERE state = 2 AND attempts = 2 AND crashes = 0") == 1)
    }

    @Test("A restart reads only what a file gained since: no task skipped, none read twice")
    func fileCheckpoint() async throws {
        let folder = Paths.scratch()
        let line: (Int) -> String = { #"{"targetId": \#($0 % 3), "id": "f\#($0)", "data": \#($0)}"# }
        try P.write((0..<10).map(line).joined(separator: "\n") + "\n", to: folder + "/tasks.jsonl")
        let config = """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: echo }
            results: { path: \(folder)/results.jsonl }
            """
        let first = try await runInProcess(config, in: folder)
        #expect(first.exitCode == 0, "\(first)")
        let handle = FileHandle(forWritingAtPath: folder + "/tasks.jsonl")!
        handle.seekToEndOfFile()
        handle.write(Data(((10..<15).map(line).joined(separator: "\n") + "\n").utf8))
        try handle.close()
        let second = try await runInProcess(config, in: folder)
        #expect(second.exitCode == 0, "\(second)")
        #expect(second.summary.admitted == 5, "\(second)")
        let ids = try P.records(folder + "/results.jsonl").map { $0["id"] as! String }
        #expect(ids.sorted() == (0..<15).map { "f\($0)" }.sorted())
        let seqs = try P.records(folder + "/results.jsonl").map { $0["seq"] as! Int }
        #expect(Set(seqs) == Set(1...15))
    }

    /// With the default dedup window, finished tasks keep a slim row each (their ids): it must not
    /// keep the page of the whole task, or the queue stays full.
    @Test(
        "A full queue pauses a file source until finished tasks are compacted; the host runs on, each task once",
        .timeLimit(.minutes(2)), arguments: [(6000, "0"), (2000, "86400000")])
    func fullQueue(tasks: Int, dedupWindowMs: String) async throws {
        let folder = Paths.scratch()
        let padding = String(repeating: "x", count: 400)
        try P.write(
            (0..<tasks).map { #"{"targetId": \#($0 % 50), "id": "q\#($0)", "data": "\#(padding)"}"# }
                .joined(separator: "\n") + "\n", to: folder + "/tasks.jsonl")
        // 6000 tasks of 400 bytes do not fit in 1 MB at once: the source waits for room.
        let run = try await runInProcess(
            """
            scheduler: { maxConcurrency: 8 }
            executors:
              archive: { plugin: TargetFile, config: { directory: \(folder)/out/by-target } }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: archive }
            results: { path: \(folder)/out/results.jsonl }
            queue: { maxSizeMB: 1, dedupWindowMs: \(dedupWindowMs) }
            """, in: folder)
        #expect(run.exitCode == 0, "\(run)")
        #expect(run.summary.queueError == nil, "\(run)")
        #expect(run.log.contains { $0.contains("the queue is full: the source waits for room") }, "\(run)")
        #expect(run.log.contains { $0.contains("the queue has room again") }, "\(run)")
        let results = try P.records(folder + "/out/results.jsonl")
        #expect(results.count == tasks)
        #expect(Set(results.map { $0["id"] as! String }).count == tasks)
    }

    @Test("Dead letters are kept in the queue: list, requeue (they run again), purge")
    func deadLetters() async throws {
        let folder = Paths.scratch()
        try P.write(
            #"{"targetId": 1, "id": "good"}"# + "\n" + #"{"targetId": 2, "id": "bad"}"# + "\nnot json\n",
            to: folder + "/tasks.jsonl")
        func config(_ program: String) -> String {
            """
            executors:
              run: { plugin: Command, config: { program: \(program) } }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: run }
            results: { path: \(folder)/results.jsonl }
            deadLetter: { path: \(folder)/dead.jsonl }
            """
        }
        // The host in-process, the operator's tools on the real binary (no host runs meanwhile).
        let first = try await runInProcess(config("/bin/false"), in: folder)
        #expect(first.exitCode == 1, "\(first)")
        let list = try await P.taskhost(["dead-letters", "pipeline.yaml", "list"], in: folder)
        let letters = list.stdout.split(separator: "\n").map {
            try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
        #expect(letters.count == 3, "\(list.stdout)")
        #expect(letters.contains { ($0["error"] as? String)?.contains("malformed JSON") == true })

        try P.write(config("/bin/true"), to: folder + "/pipeline.yaml")
        let requeue = try await P.taskhost(["dead-letters", "pipeline.yaml", "requeue", "--all"], in: folder)
        #expect(requeue.stdout.contains("2 dead letters requeued"), "\(requeue.stdout)")
        #expect(requeue.stdout.contains("1 left"), "\(requeue.stdout)")
        let second = try await runInProcess(config("/bin/true"), in: folder)
        #expect(second.exitCode == 0, "\(second)")
        let succeeded = try P.records(folder + "/results.jsonl").filter { $0["status"] as? String == "succeeded" }
        #expect(Set(succeeded.map { $0["id"] as! String }) == ["good", "bad"])

        let purge = try await P.taskhost(["dead-letters", "pipeline.yaml", "purge", "--all"], in: folder)
        #expect(purge.stdout.contains("1 dead letter purged"), "\(purge.stdout)")
        let empty = try await P.taskhost(["dead-letters", "pipeline.yaml", "list"], in: folder)
        #expect(empty.stdout.isEmpty)
    }

    @Test("A backlog on one target never holds another target's tasks back, whatever the buffer size")
    func backlogDoesNotBlockOtherTargets() async throws {
        let folder = Paths.scratch()
        let lines =
            (0..<1000).map { #"{"targetId": "A", "id": "a\#($0)", "data": \#($0)}"# }
            + (0..<5).map { #"{"targetId": "B", "id": "b\#($0)", "data": \#($0)}"# }
        try P.write(lines.joined(separator: "\n") + "\n", to: folder + "/tasks.jsonl")
        let run = try await runInProcess(
            """
            scheduler: { maxConcurrency: 4, bufferSize: 100 }
            executors:
              echo: { plugin: Echo, config: { delayMs: 2 } }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: echo }
            results: { path: \(folder)/results.jsonl }
            """, in: folder)
        #expect(run.exitCode == 0, "\(run)")
        // The results file is in order of completion: A's tasks run one at a time, B's could run
        // beside them from the start. Read in global arrival order, B's tasks came after all 1,000
        // of A's, whose backlog is ten times the buffer.
        let order = try P.records(folder + "/results.jsonl").map { $0["id"] as? String ?? "" }
        #expect(order.count == 1005)
        let positions = order.enumerated().filter { $0.element.hasPrefix("b") }.map(\.offset)
        #expect(positions.count == 5)
        #expect(positions.allSatisfy { $0 < 100 }, "B finished at \(positions)")
        // A's tasks kept their order.
        #expect(order.filter { $0.hasPrefix("a") } == (0..<1000).map { "a\($0)" })
    }

    @Test("A crash after an attempt's result line but before its outcome is committed: the re-run has a higher attempt")
    func crashBeforeOutcomeCommit() async throws {
        let folder = Paths.scratch()
        var settings = QueueSettings(path: folder + "/queue.db")
        settings.retainFinished = .seconds(60)
        let row: Int64
        do {
            let queue = try DurableQueue(settings: settings, host: true)
            let run = DurableRun(
                queue: queue, executors: ["x"], window: 4, logger: Logger(label: "test"), onFailure: { _ in })
            _ = try run.recover()
            try queue.transaction { db in
                try DurableQueue.insert(
                    [
                        NewTask(
                            source: "s", seq: 1, taskId: "once", target: .string("t"), executor: "x", priority: 0,
                            payload: "{}", raw: "{}", batch: nil)
                    ], into: db, now: unixMilliseconds())
            }
            let stored = try #require(try queue.transaction { db in try db.queued(after: 0, limit: 10) }.first)
            row = stored.row
            let record = DurableRecord(row: row, attempts: 0, notBefore: 0, crashes: 0)
            run.leased(record, attempt: 1)
            // The attempt ran, its result line was written; the host dies before the commit.
        }
        let queue = try DurableQueue(settings: settings, host: true)
        let run = DurableRun(
            queue: queue, executors: ["x"], window: 4, logger: Logger(label: "test"), onFailure: { _ in })
        #expect(try run.recover() == 1)
        let stored = try #require(try queue.transaction { db in try db.queued(after: 0, limit: 10) }.first)
        #expect(stored.row == row)
        #expect(stored.attempts == 1)
        #expect(stored.crashes == 1)
        // The scheduler counts on from the attempts made: the re-run is attempt 2.
        let history = run.history(of: DurableRecord(row: row, attempts: stored.attempts, notBefore: 0, crashes: 1))
        #expect(history.attempts == 1)

        // Committed, the outcome clears the journal: nothing is counted at the next start.
        let record = DurableRecord(row: row, attempts: 1, notBefore: 0, crashes: 1)
        run.leased(record, attempt: 2)
        await run.record(.succeeded(output: nil), of: record, attempt: 2, target: .string("t"))
        #expect(queue.running?.leftovers() == [])
    }

    @Test("Finished tasks are deleted after the retention: the file does not grow without bound")
    func retention() async throws {
        let folder = Paths.scratch()
        try P.write(
            (0..<500).map { #"{"targetId": \#($0 % 10), "data": \#($0)}"# }.joined(separator: "\n") + "\n",
            to: folder + "/tasks.jsonl")
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: echo }
            results: { path: \(folder)/results.jsonl }
            queue: { retainFinishedMs: 0 }
            """, in: folder)
        #expect(run.exitCode == 0, "\(run)")
        #expect(try P.records(folder + "/results.jsonl").count == 500)
        let queue = try D.queue(folder)
        #expect(try D.count(queue, "SELECT count(*) FROM tasks") == 0)
    }
}

/// splitmix64, for kill points that a seed replays.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
