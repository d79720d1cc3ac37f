import Foundation
import PostgresNIO
import Testing

@testable import TaskHostPostgres

@Suite struct PostgresSchemaTests {
    @Test func withoutTheDatabaseURLTheTestsFailAndSayHowToRunThem() {
        #expect(throws: MissingTestDatabase.self) { try testDatabaseURL([:]) }
        #expect(MissingTestDatabase().description.contains("scripts/test.sh"))
    }

    @Test func theSchemaIsCreatedOnceAndOpeningAgainKeepsIt() async throws {
        try await withQueue { queue in
            #expect(
                try await count(
                    queue,
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = '\(queue.schema)'") == 5)
            #expect(
                try await count(queue, "SELECT value::bigint FROM th_meta WHERE key = 'schema_version'")
                    == Int64(PostgresSchema.version))
            _ = try await queue.enqueue([task("a", "1")])
            // A second host opening the same schema changes nothing.
            try await queue.prepare()
            #expect(try await count(queue, "SELECT count(*) FROM th_task") == 1)
        }
    }

    @Test func hostsOpeningAFreshSchemaTogetherDoNotRace() async throws {
        try await withQueue { queue in
            let url = try testDatabaseURL()
            let schema = queue.schema + "_x"
            let others = try (0..<4).map { _ in
                try PostgresQueue(url: url, schema: schema, lease: .seconds(30), logger: testLogger)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for other in others { group.addTask { await other.run() } }
                try await withThrowingTaskGroup(of: Void.self) { opens in
                    for other in others { opens.addTask { try await other.prepare() } }
                    try await opens.waitForAll()
                }
                #expect(
                    try await count(
                        queue, "SELECT count(*) FROM information_schema.tables WHERE table_schema = '\(schema)'") == 5)
                try await queue.client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \"\(schema)\" CASCADE"))
                group.cancelAll()
            }
        }
    }

    @Test func aSchemaNewerThanThisBuildIsRefusedNamingBothVersions() async throws {
        try await withQueue { queue in
            try await queue.client.query("UPDATE th_meta SET value = '7' WHERE key = 'schema_version'")
            let error = await #expect(throws: PostgresQueueError.self) { try await queue.prepare() }
            let text = error?.description ?? ""
            #expect(text.contains("version 7"), "\(text)")
            #expect(text.contains("up to \(PostgresSchema.version)"), "\(text)")
            #expect(text.contains("newer taskhost"), "\(text)")
            #expect(text.contains("queue.postgres.schema"), "\(text)")
        }
    }

    @Test func theURLIsReadAndItsErrorsSayWhatToWrite() throws {
        let url = try PostgresConnectionURL("postgres://app:s%40cret@db.example:6543/jobs")
        #expect(url.user == "app")
        #expect(url.password == "s@cret")
        #expect(url.host == "db.example")
        #expect(url.port == 6543)
        #expect(url.database == "jobs")
        #expect(!url.redacted.contains("cret"))
        let socket = try PostgresConnectionURL("postgresql://app@/jobs?host=/run/postgresql")
        #expect(socket.unixSocketFolder == "/run/postgresql")
        #expect(socket.port == 5432)
        #expect(throws: PostgresQueueError.self) { try PostgresConnectionURL("mysql://a@b/c") }
        #expect(throws: PostgresQueueError.self) { try PostgresConnectionURL("postgres://db/c") }
        let tls = #expect(throws: PostgresQueueError.self) {
            try PostgresConnectionURL("postgres://a@b/c?sslmode=require")
        }
        #expect(tls?.message.contains("not supported yet") == true)
    }

    @Test func anUnreachableDatabaseIsAnErrorThatNamesItWithoutThePassword() async throws {
        // A port nobody listens on: the first connection fails.
        let queue = try PostgresQueue(
            url: "postgres://u:hunter2@127.0.0.1:1/nothing", schema: "taskhost", lease: .seconds(30),
            logger: testLogger)
        await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await queue.run() }
            let error = await #expect(throws: PostgresQueueError.self) {
                try await withTimeout { try await queue.prepare() }
            }
            #expect(error?.message.contains("127.0.0.1:1") == true, "\(String(describing: error))")
            #expect(error?.description.contains("hunter2") == false)
            #expect(error?.remedy.contains("queue.postgres.url") == true, "\(String(describing: error))")
            group.cancelAll()
        }
    }
}

/// Runs `body`, or fails after a minute (a hang is a failure, not a wait forever).
func withTimeout(_ body: @escaping @Sendable () async throws -> Void) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(60))
            throw PostgresQueueError("timed out", remedy: "")
        }
        try await group.next()
        group.cancelAll()
    }
}
