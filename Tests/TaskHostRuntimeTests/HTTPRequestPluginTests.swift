import Foundation
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostStore
import Testing

@testable import TaskHostRuntime

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The HTTP request plugin against a real server on loopback (a Python process of the test's own).
@Suite struct HTTPRequestPluginTests {
    /// Starts the fixture server; it stops when `stdin` is closed.
    final class Server {
        let process = Process()
        let stdin = Pipe()
        let port: Int

        init() throws {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", Paths.packageRoot + "/Tests/TaskHostRuntimeTests/Fixtures/http_server.py"]
            let stdout = Pipe()
            process.standardOutput = stdout
            process.standardInput = stdin
            try process.run()
            var line = Data()
            while let byte = try stdout.fileHandleForReading.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8)
            {
                line.append(byte)
            }
            port = Int(String(decoding: line, as: UTF8.self)) ?? 0
        }

        var base: String { "http://127.0.0.1:\(port)" }

        deinit {
            try? stdin.fileHandleForWriting.close()
            process.waitUntilExit()
        }
    }

    func executor(_ config: String, outcomes: OutcomeRecorder) throws -> PluginExecutor {
        let instance = try loader().load("HTTPRequest").makeInstance(
            configuration: config, logger: LogRecorder().logger)
        return PluginExecutor(instance: instance, outcomes: outcomes.callback)
    }

    @Test("Requests map to outcomes: 2xx output, 429 retry-after, 404 permanent, POST bodies")
    func statuses() async throws {
        let server = try Server()
        let outcomes = OutcomeRecorder()
        let executor = try executor(#"{"baseURL": "\#(server.base)", "timeoutMs": 10000}"#, outcomes: outcomes)
        let tasks = [
            TaskItem(targetId: "a", payload: #"{"path": "/ok"}"#, id: "t1"),
            TaskItem(targetId: "b", payload: #"{"method": "POST", "path": "/echo", "body": "ping"}"#),
            TaskItem(targetId: "c", payload: #"{"path": "/busy"}"#),
            TaskItem(targetId: "d", payload: "/missing"),
        ]
        let summary = await run(executor: executor, tasks: TaskList(tasks), maxConcurrency: 4)
        #expect(summary.succeeded == 2)
        let byTarget = Dictionary(uniqueKeysWithValues: outcomes.all.map { ($0.payload, $0.outcome) })
        #expect(byTarget[tasks[0].payload]?.output == "hello t1")
        #expect(byTarget[tasks[1].payload]?.output == "ping")
        #expect(byTarget[tasks[2].payload]?.status == 3)  // TH_RETRYABLE
        #expect(byTarget[tasks[2].payload]?.retryAfterMilliseconds == 2000)
        #expect(byTarget[tasks[3].payload]?.status == 8)  // TH_PERMANENT
        #expect(byTarget[tasks[3].payload]?.message?.contains("404") == true)
    }

    @Test("With the server as the target, requests to one server never overlap")
    func oneRequestPerServer() async throws {
        let servers = try [Server(), Server()]
        let outcomes = OutcomeRecorder()
        let executor = try executor(#"{"timeoutMs": 10000}"#, outcomes: outcomes)
        let tasks = (0..<24).map { i in
            TaskItem(targetId: .string(servers[i % 2].base), payload: #"{"path": "/slow"}"#)
        }
        let summary = await run(executor: executor, tasks: TaskList(tasks), maxConcurrency: 8)
        #expect(summary.succeeded == 24)
        for server in servers {
            let (data, _) = try await URLSession.shared.data(from: URL(string: server.base + "/stats")!)
            let stats = try JSONSerialization.jsonObject(with: data) as! [String: Int]
            #expect(stats["slow"] == 12)
            #expect(stats["max_concurrent_slow"] == 1)
        }
    }

    @Test("A bad baseURL is refused by validate, naming the key")
    func configuration() throws {
        let plugin = try loader().load("HTTPRequest")
        #expect(plugin.validate(configuration: #"{"baseURL": "ftp://x"}"#)?.contains("key 'baseURL'") == true)
        #expect(plugin.validate(configuration: #"{"timeoutMs": "soon"}"#)?.contains("timeoutMs") == true)
    }
}
