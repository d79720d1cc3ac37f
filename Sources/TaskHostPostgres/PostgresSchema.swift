import Logging
import PostgresNIO

/// The queue's tables, created and migrated by whoever opens the queue first (a host or an
/// operator's command), in one transaction under an advisory lock so that hosts starting together
/// do not race. The version is kept in `th_meta`; a schema newer than this build is refused.
///
/// One row per target holds the target's whole state machine (design: one row per key, fenced
/// claims with `SKIP LOCKED`):
/// - `th_target.state`: `idle` (no task), `ready` (its head may run from `next_run_at` on; a
///   retry's backoff is `ready` with a later `next_run_at`), `running` (claimed by `owner_host`
///   with `fence`), `parked` (its head failed for good under `onExhausted: park`).
/// - `head_seq`…`tail_seq`: the target's tasks in `th_task`, numbered without gaps under the
///   target row's lock, so that their order is the order their enqueues committed.
/// - `head_attempt`: the head's attempts so far, counted when it is claimed (a host that dies
///   during an attempt has used it); `head_deaths`: those during which its host died (reaped).
/// - `fence`: raised by every claim; a completion, retry or park must name the fence of its claim.
package enum PostgresSchema {
    /// The version this build creates and understands.
    package static let version = 1

    /// Version 1: hosts, targets, tasks and dead letters.
    static let version1: [String] = [
        """
        CREATE TABLE th_host (
          host_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          name text NOT NULL,
          pid integer NOT NULL,
          max_concurrency integer NOT NULL,
          started_at timestamptz NOT NULL DEFAULT now(),
          lease_until timestamptz NOT NULL,
          state text NOT NULL DEFAULT 'live' CHECK (state IN ('live', 'dead')))
        """,
        """
        CREATE TABLE th_target (
          target_id text PRIMARY KEY,
          state text NOT NULL CHECK (state IN ('idle', 'ready', 'running', 'parked')),
          head_seq bigint,
          tail_seq bigint NOT NULL DEFAULT 0,
          head_attempt integer NOT NULL DEFAULT 0,
          head_deaths integer NOT NULL DEFAULT 0,
          next_run_at timestamptz NOT NULL DEFAULT now(),
          owner_host bigint,
          fence bigint NOT NULL DEFAULT 0,
          updated_at timestamptz NOT NULL DEFAULT now(),
          CHECK ((state = 'running') = (owner_host IS NOT NULL)),
          CHECK ((state = 'idle') = (head_seq IS NULL)),
          CHECK (head_seq <= tail_seq))
        WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01)
        """,
        "CREATE INDEX th_target_ready ON th_target (next_run_at, target_id) WHERE state = 'ready'",
        "CREATE INDEX th_target_owner ON th_target (owner_host) WHERE state = 'running'",
        // No foreign key to th_target: a child insert would take KEY SHARE on the target row.
        """
        CREATE TABLE th_task (
          target_id text NOT NULL,
          seq bigint NOT NULL,
          task_id text NOT NULL,
          executor text,
          priority integer NOT NULL DEFAULT 0,
          payload text NOT NULL,
          last_error text,
          enqueued_at timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (target_id, seq))
        WITH (autovacuum_vacuum_scale_factor = 0.01)
        """,
        """
        CREATE TABLE th_dead (
          dead_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          task_id text NOT NULL,
          target_id text NOT NULL,
          seq bigint NOT NULL,
          executor text,
          payload text NOT NULL,
          attempts integer NOT NULL,
          error text,
          enqueued_at timestamptz NOT NULL,
          dead_at timestamptz NOT NULL DEFAULT now())
        """,
        "CREATE INDEX th_dead_target ON th_dead (target_id, seq)",
    ]

    /// The statements that bring version `n - 1` to `n`, for n in 1...version.
    static let migrations: [Int: [String]] = [1: version1]

    /// Creates the schema (and the tables) when missing, and migrates an older one.
    ///
    /// - Throws: ``PostgresQueueError`` for a schema newer than this build (naming both versions)
    ///   or a statement the server refused.
    package static func prepare(schema: String, on connection: PostgresConnection, logger: Logger)
        async throws(PostgresQueueError)
    {
        do {
            try await connection.withTransaction(logger: logger) { connection in
                // One migrator at a time per schema: hosts that start together wait for the first.
                try await connection.query(
                    "SELECT pg_advisory_xact_lock(hashtext(\("taskhost-schema:" + schema)))", logger: logger)
                try await connection.query(
                    PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \"\(schema)\""), logger: logger)
                try await connection.query(
                    PostgresQuery(
                        unsafeSQL:
                            "CREATE TABLE IF NOT EXISTS \"\(schema)\".th_meta (key text PRIMARY KEY, value text NOT NULL)"
                    ),
                    logger: logger)
                var found = 0
                for try await value in try await connection.query(
                    PostgresQuery(
                        unsafeSQL: "SELECT value FROM \"\(schema)\".th_meta WHERE key = 'schema_version'"),
                    logger: logger
                ).decode(String.self) {
                    found = Int(value) ?? Int.max
                }
                if found > version {
                    throw PostgresQueueError(
                        "the queue's schema \"\(schema)\" is at version \(found == Int.max ? "?" : String(found)), "
                            + "and this taskhost knows versions up to \(version): a newer taskhost created it",
                        remedy:
                            "run the newer taskhost on this queue, or give this pipeline another schema (queue.postgres.schema)"
                    )
                }
                guard found < version else { return }
                try await connection.query(
                    PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \"\(schema)\""), logger: logger)
                for step in (found + 1)...version {
                    for statement in migrations[step] ?? [] {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                }
                try await connection.query(
                    """
                    INSERT INTO th_meta (key, value) VALUES ('schema_version', \(String(version)))
                    ON CONFLICT (key) DO UPDATE SET value = excluded.value
                    """, logger: logger)
                logger.info(
                    "created the queue's tables in PostgreSQL",
                    metadata: ["schema": "\(schema)", "from": "\(found)", "to": "\(version)"])
            }
        } catch {
            throw PostgresQueueError(error, doing: "preparing the queue's schema \"\(schema)\"")
        }
    }
}
