import Foundation
import Logging
import PostgresNIO
import Testing

@testable import TaskHostPostgres

/// The database the tests use: `TASKHOST_TEST_DATABASE_URL`, set by `scripts/test.sh` (which
/// starts a throwaway PostgreSQL). Missing, the tests that need it fail, saying so.
struct MissingTestDatabase: Error, CustomStringConvertible {
    var description: String {
        "TASKHOST_TEST_DATABASE_URL is not set: run the tests with scripts/test.sh (or scripts/with_postgres.sh swift test),"
            + " which starts a throwaway PostgreSQL for them"
    }
}

func testDatabaseURL(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
    guard let url = environment["TASKHOST_TEST_DATABASE_URL"], !url.isEmpty else { throw MissingTestDatabase() }
    return url
}

let testLogger: Logger = {
    var logger = Logger(label: "taskhost.postgres.test")
    logger.logLevel = .error
    return logger
}()

/// A fresh schema of its own for one test (tests run in parallel on one database), prepared, and
/// dropped afterwards.
func withQueue(schema: String? = nil, _ body: (PostgresQueue) async throws -> Void) async throws {
    let url = try testDatabaseURL()
    let schema = schema ?? "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
    let queue = try PostgresQueue(url: url, schema: schema, lease: .seconds(30), logger: testLogger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await queue.run() }
        var failure: (any Error)?
        do {
            try await queue.prepare()
            try await body(queue)
        } catch {
            failure = error
        }
        _ = try? await queue.client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(schema)\" CASCADE"))
        group.cancelAll()
        if let failure { throw failure }
    }
}

/// Runs `body` with `count` connections of their own (a transaction on one stays open while the
/// others work).
func withConnections<R: Sendable>(
    _ queue: PostgresQueue, _ body: (PostgresConnection, PostgresConnection) async throws -> R
) async throws -> R {
    try await queue.client.withConnection { a in
        try await queue.client.withConnection { b in try await body(a, b) }
    }
}

func backendPID(_ connection: PostgresConnection) async throws -> Int32 {
    for try await pid in try await connection.query("SELECT pg_backend_pid()", logger: testLogger).decode(Int32.self) {
        return pid
    }
    throw MissingTestDatabase()
}

/// Waits until the backend `pid` waits for a lock: a condition polled, not a duration assumed.
func waitUntilBlocked(_ queue: PostgresQueue, pid: Int32) async throws {
    for _ in 0..<2000 {
        for try await count in try await queue.client.query(
            "SELECT count(*) FROM pg_locks WHERE pid = \(pid) AND NOT granted"
        ).decode(Int64.self) where count > 0 {
            return
        }
        try await Task.sleep(for: .milliseconds(5))
    }
    Issue.record("backend \(pid) never waited for a lock")
}

func begin(_ connection: PostgresConnection) async throws { try await connection.query("BEGIN", logger: testLogger) }
func commit(_ connection: PostgresConnection) async throws { try await connection.query("COMMIT", logger: testLogger) }

/// One target's row, as the tests check it.
struct TargetRow: Equatable {
    var state: String
    var headSeq: Int64?
    var tailSeq: Int64
    var headAttempt: Int32
    var fence: Int64
    var owner: Int64?
}

func target(_ queue: PostgresQueue, _ id: String) async throws -> TargetRow? {
    for try await (state, head, tail, attempt, fence, owner) in try await queue.client.query(
        "SELECT state, head_seq, tail_seq, head_attempt, fence, owner_host FROM th_target WHERE target_id = \(id)"
    ).decode((String, Int64?, Int64, Int32, Int64, Int64?).self) {
        return TargetRow(
            state: state, headSeq: head, tailSeq: tail, headAttempt: attempt, fence: fence, owner: owner)
    }
    return nil
}

func count(_ queue: PostgresQueue, _ sql: String) async throws -> Int64 {
    for try await value in try await queue.client.query(PostgresQuery(unsafeSQL: sql)).decode(Int64.self) {
        return value
    }
    return -1
}

func task(_ target: String, _ id: String) -> PostgresNewTask {
    PostgresNewTask(targetId: target, taskId: id, payload: "{\"id\":\"\(id)\",\"target\":\"\(target)\"}")
}
