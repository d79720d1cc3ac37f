import Foundation
import Testing

@testable import TaskHostConfig
@testable import TaskHostPlugins
@testable import TaskHostRuntime

/// `queue: { postgres: … }` and `scheduler.globalMaxConcurrency` in the pipeline file.
@Suite struct PostgresConfigTests {
    func parse(_ queue: String, scheduler: String = "", environment: [String: String] = [:]) throws(ConfigError)
        -> PipelineConfig
    {
        try ConfigLoader.parse(
            """
            \(scheduler)executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: stdin, executor: echo }
            \(queue)
            """, file: "p.yaml", environment: environment)
    }

    func error(_ queue: String, scheduler: String = "", environment: [String: String] = [:]) -> ConfigError? {
        do {
            _ = try parse(queue, scheduler: scheduler, environment: environment)
            return nil
        } catch {
            return error
        }
    }

    @Test func thePostgresQueueIsReadWithItsDefaultsAndTheURLFromTheEnvironment() throws {
        let config = try parse(
            "queue: { postgres: { url: \"${DATABASE_URL}\" } }",
            environment: ["DATABASE_URL": "postgres://app:pw@db:5432/jobs"])
        #expect(config.postgres == PostgresQueueSettings(url: "postgres://app:pw@db:5432/jobs"))
        #expect(config.postgres?.lease == .seconds(30))
        #expect(config.postgres?.schema == "taskhost")
        #expect(config.queue == nil)
        guard case .postgres = config.queueKind else {
            Issue.record("expected the postgres queue kind")
            return
        }
        let full = try parse(
            """
            queue:
              postgres:
                url: postgres://a@b/c
                leaseMs: 5000
                schema: orders_q
            """, scheduler: "scheduler: { maxConcurrency: 4, globalMaxConcurrency: 16 }\n")
        #expect(full.postgres?.lease == .milliseconds(5000))
        #expect(full.postgres?.schema == "orders_q")
        #expect(full.globalMaxConcurrency == 16)
        #expect(full.maxConcurrency == 4)
    }

    @Test func theSQLiteAndMemoryQueuesAreUnchanged() throws {
        guard case .sqlite(let settings) = try parse("queue: { path: /tmp/q.db }").queueKind else {
            Issue.record("expected the SQLite queue")
            return
        }
        #expect(settings.path == "/tmp/q.db")
        guard case .sqlite = try parse("").queueKind, case .memory = try parse("queue: memory").queueKind else {
            Issue.record("expected the SQLite queue by default and memory when asked")
            return
        }
        #expect(try parse("queue: memory").postgres == nil)
    }

    @Test func badPostgresSettingsAreAnsweredAtTheirLine() {
        let missing = error("queue: { postgres: { leaseMs: 5000 } }")
        #expect(missing?.key == "queue.postgres")
        #expect(missing?.message == "missing key 'url'")
        #expect(missing?.line == 5)

        let unset = error("queue: { postgres: { url: \"${DATABASE_URL}\" } }")
        #expect(unset?.key == "queue.postgres.url")
        #expect(unset?.message.contains("DATABASE_URL is not set") == true)

        let notAURL = error("queue: { postgres: { url: \"mysql://x\" } }")
        #expect(notAURL?.message == "expected a postgres:// URL")

        let short = error("queue: { postgres: { url: \"postgres://a@b/c\", leaseMs: 10 } }")
        #expect(short?.key == "queue.postgres.leaseMs")
        #expect(short?.line == 5)
        #expect(short?.column != nil)

        let typo = error("queue: { postgres: { url: \"postgres://a@b/c\", leaseMS: 1000 } }")
        #expect(typo?.key.hasPrefix("queue.postgres") == true)
        #expect(typo?.description.contains("leaseMS") == true)

        let schema = error("queue: { postgres: { url: \"postgres://a@b/c\", schema: \"Bad-Name\" } }")
        #expect(schema?.key == "queue.postgres.schema")

        let mixed = error("queue: { path: /tmp/q.db, postgres: { url: \"postgres://a@b/c\" } }")
        #expect(mixed?.key == "queue.path")
        #expect(mixed?.message.contains("belongs to the SQLite queue") == true)

        let global = error("", scheduler: "scheduler: { globalMaxConcurrency: 8 }\n")
        #expect(global?.key == "scheduler.globalMaxConcurrency")
        #expect(global?.line == 1)
    }

    @Test func theOperatorCommandsRefuseThePreviewQueueWithAClearMessageAndRunBuildsIt() throws {
        let config = try parse("queue: { postgres: { url: \"postgres://a@b/c\" } }")
        let loader = PluginLoader(
            searchPath: PluginLoader.searchPath(extra: [Paths.builtPlugins], environment: [:]), allowInsecure: false)
        // Built without connecting: the database is reached when the run opens its queue.
        let pipeline = try buildPipeline(configuration: config, loader: loader, logger: LogRecorder().logger)
        #expect(pipeline.postgres?.schema == "taskhost")
        #expect {
            _ = try QueueAdmin(config: config)
        } throws: { error in
            (error as? ConfigError)?.key == "queue.postgres" && "\(error)".contains("preview")
        }
    }

    @Test func anUnreachableDatabaseStopsTheRunWithExitCode3NamingIt() async throws {
        let folder = Paths.scratch()
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: stdin, executor: echo }
            queue: { postgres: { url: "postgres://u:secret@127.0.0.1:1/none" } }
            """, in: folder)
        #expect(run.exitCode == 3, "\(run)")
        #expect(run.summary.queueError?.contains("127.0.0.1:1") == true, "\(run)")
        #expect(run.summary.queueError?.contains("secret") == false)
    }
}
