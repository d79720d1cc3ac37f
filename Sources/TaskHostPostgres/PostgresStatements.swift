import PostgresNIO

// Every statement of the queue, prepared once per connection (postgres-nio's
// `PostgresPreparedStatement`), with batches bound as arrays and expanded by `unnest`. Table names
// are unqualified: each connection's `search_path` is the queue's schema.
//
// Lock order: a statement that writes several target rows locks them first in `target_id` order
// (`FOR NO KEY UPDATE` in a MATERIALIZED CTE), then updates through that set. An `UPDATE … FROM
// unnest(…)` alone may be planned as a hash join and lock rows in physical order, which deadlocks
// against a concurrent batch (measured: the design's erratum). Claims never wait (`SKIP LOCKED`).

/// Adds `count` tasks to each target (targets sorted, each once), creating it or waking it from
/// `idle`; returns each target's new `tail_seq`. The row lock holds until commit, so the seq
/// numbers of one target follow the order in which enqueues commit, without gaps.
struct EnqueueTargets: PostgresPreparedStatement {
    static let sql = """
        INSERT INTO th_target AS t (target_id, state, head_seq, tail_seq, next_run_at)
        SELECT tg, 'ready', 1, n, now() FROM unnest($1::text[], $2::bigint[]) AS x(tg, n) ORDER BY tg
        ON CONFLICT (target_id) DO UPDATE SET tail_seq = t.tail_seq + excluded.tail_seq,
          head_seq = CASE WHEN t.state = 'idle' THEN t.tail_seq + 1 ELSE t.head_seq END,
          next_run_at = CASE WHEN t.state = 'idle' THEN now() ELSE t.next_run_at END,
          state = CASE WHEN t.state = 'idle' THEN 'ready' ELSE t.state END,
          updated_at = now()
        RETURNING target_id, tail_seq
        """
    typealias Row = (String, Int64)
    var targets: [String]
    var counts: [Int64]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(targets)
        bindings.append(counts)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// Inserts the tasks with the seq numbers `EnqueueTargets` gave them (an empty executor is none).
struct InsertTasks: PostgresPreparedStatement {
    static let sql = """
        INSERT INTO th_task (target_id, seq, task_id, executor, priority, payload)
        SELECT tg, sq, id, NULLIF(ex, ''), pr, pl
        FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[]) AS x(tg, sq, id, ex, pr, pl)
        """
    typealias Row = Void
    var targets: [String]
    var seqs: [Int64]
    var taskIds: [String]
    var executors: [String]
    var priorities: [Int64]
    var payloads: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 6)
        bindings.append(targets)
        bindings.append(seqs)
        bindings.append(taskIds)
        bindings.append(executors)
        bindings.append(priorities)
        bindings.append(payloads)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row {}
}

/// Locks the host's row (shared) while its lease is valid on the database's clock: a claim holds
/// it until commit, so the reaper cannot declare the host dead between the check and the claim.
struct LockLiveHost: PostgresPreparedStatement {
    static let sql = """
        SELECT host_id FROM th_host WHERE host_id = $1 AND state = 'live' AND lease_until > now() FOR SHARE
        """
    typealias Row = Int64
    var host: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(host)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int64.self) }
}

/// Takes up to `limit` ready targets whose time has come, oldest-ready first (a busy target
/// re-enters at the back each time its head moves, so it never delays a free one), skipping rows
/// another claimer holds; each claim raises the fence and counts an attempt. The candidates are
/// MATERIALIZED so that the planner cannot re-run the LIMIT subquery and take more.
struct ClaimTargets: PostgresPreparedStatement {
    static let sql = """
        WITH p AS MATERIALIZED (
          SELECT target_id FROM th_target WHERE state = 'ready' AND next_run_at <= now()
          ORDER BY next_run_at, target_id LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED)
        UPDATE th_target t SET state = 'running', owner_host = $1, fence = t.fence + 1,
          head_attempt = t.head_attempt + 1, updated_at = now()
        FROM p WHERE t.target_id = p.target_id AND t.state = 'ready'
        RETURNING t.target_id, t.head_seq, t.head_attempt, t.fence, t.head_deaths
        """
    typealias Row = (String, Int64, Int32, Int64, Int32)
    var host: Int64
    var limit: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(host)
        bindings.append(limit)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// The claimed heads' tasks. A statement of its own: its snapshot is taken after the claim, so it
/// sees a task committed after the claim's snapshot by the enqueue that woke the target.
struct ReadHeads: PostgresPreparedStatement {
    static let sql = """
        SELECT k.target_id, k.seq, k.task_id, k.executor, k.priority, k.payload
        FROM th_task k JOIN unnest($1::text[], $2::bigint[]) AS c(target_id, seq)
          ON k.target_id = c.target_id AND k.seq = c.seq
        """
    typealias Row = (String, Int64, String, String?, Int32, String)
    var targets: [String]
    var seqs: [Int64]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(targets)
        bindings.append(seqs)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// Ends heads for good, fenced: each moves its target to the next task (`ready`) or to `idle`,
/// deletes the task and, for a dead letter, copies it to `th_dead` with its attempts and error.
/// The next head comes from the locked row's `tail_seq`, never from a read of `th_task` (whose
/// snapshot could miss a task an enqueue just committed, and orphan it). Returns what was applied;
/// an input missing from the result held a stale fence and changed nothing.
struct FinishHeads: PostgresPreparedStatement {
    static let sql = """
        WITH d AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bool[], $5::bigint[], $6::text[])
                     AS d(target_id, seq, fence, dead, attempts, error)),
        l AS MATERIALIZED (SELECT t.target_id FROM th_target t JOIN d ON t.target_id = d.target_id
                           ORDER BY t.target_id FOR NO KEY UPDATE OF t),
        t AS (UPDATE th_target t SET state = CASE WHEN t.tail_seq > t.head_seq THEN 'ready' ELSE 'idle' END,
                head_seq = CASE WHEN t.tail_seq > t.head_seq THEN t.head_seq + 1 END, head_attempt = 0,
                head_deaths = 0, next_run_at = now(), owner_host = NULL, updated_at = now()
              FROM d JOIN l ON l.target_id = d.target_id
              WHERE t.target_id = d.target_id AND t.state = 'running' AND t.fence = d.fence AND t.head_seq = d.seq
              RETURNING d.target_id, d.seq, d.dead, d.attempts, d.error),
        k AS (DELETE FROM th_task k USING t WHERE k.target_id = t.target_id AND k.seq = t.seq
              RETURNING k.task_id, k.target_id, k.seq, k.executor, k.payload, k.enqueued_at),
        x AS (INSERT INTO th_dead (task_id, target_id, seq, executor, payload, attempts, error, enqueued_at)
              SELECT k.task_id, k.target_id, k.seq, k.executor, k.payload, t.attempts, t.error, k.enqueued_at
              FROM k JOIN t ON k.target_id = t.target_id AND k.seq = t.seq WHERE t.dead)
        SELECT target_id, seq FROM t
        """
    typealias Row = (String, Int64)
    var targets: [String]
    var seqs: [Int64]
    var fences: [Int64]
    var dead: [Bool]
    var attempts: [Int64]
    var errors: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 6)
        bindings.append(targets)
        bindings.append(seqs)
        bindings.append(fences)
        bindings.append(dead)
        bindings.append(attempts)
        bindings.append(errors)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// Holds heads for another attempt, fenced: the target stays on its head (per-target FIFO through
/// retries), `ready` again after the backoff on the database's clock; the error is kept on the task.
struct RetryHeads: PostgresPreparedStatement {
    static let sql = """
        WITH d AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[])
                     AS d(target_id, seq, fence, delay_ms, error)),
        l AS MATERIALIZED (SELECT t.target_id FROM th_target t JOIN d ON t.target_id = d.target_id
                           ORDER BY t.target_id FOR NO KEY UPDATE OF t),
        t AS (UPDATE th_target t SET state = 'ready', owner_host = NULL,
                next_run_at = now() + d.delay_ms * interval '1 millisecond', updated_at = now()
              FROM d JOIN l ON l.target_id = d.target_id
              WHERE t.target_id = d.target_id AND t.state = 'running' AND t.fence = d.fence AND t.head_seq = d.seq
              RETURNING d.target_id, d.seq, d.error),
        k AS (UPDATE th_task k SET last_error = t.error FROM t WHERE k.target_id = t.target_id AND k.seq = t.seq)
        SELECT target_id, seq FROM t
        """
    typealias Row = (String, Int64)
    var targets: [String]
    var seqs: [Int64]
    var fences: [Int64]
    var delays: [Int64]
    var errors: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(targets)
        bindings.append(seqs)
        bindings.append(fences)
        bindings.append(delays)
        bindings.append(errors)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// Parks targets on their failed heads, fenced: nothing of the target runs until an operator
/// releases it; the head and its error stay.
struct ParkHeads: PostgresPreparedStatement {
    static let sql = """
        WITH d AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) AS d(target_id, seq, fence, error)),
        l AS MATERIALIZED (SELECT t.target_id FROM th_target t JOIN d ON t.target_id = d.target_id
                           ORDER BY t.target_id FOR NO KEY UPDATE OF t),
        t AS (UPDATE th_target t SET state = 'parked', owner_host = NULL, updated_at = now()
              FROM d JOIN l ON l.target_id = d.target_id
              WHERE t.target_id = d.target_id AND t.state = 'running' AND t.fence = d.fence AND t.head_seq = d.seq
              RETURNING d.target_id, d.seq, d.error),
        k AS (UPDATE th_task k SET last_error = t.error FROM t WHERE k.target_id = t.target_id AND k.seq = t.seq)
        SELECT target_id, seq FROM t
        """
    typealias Row = (String, Int64)
    var targets: [String]
    var seqs: [Int64]
    var fences: [Int64]
    var errors: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(targets)
        bindings.append(seqs)
        bindings.append(fences)
        bindings.append(errors)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// A new host with its lease, counted from the database's clock.
struct RegisterHost: PostgresPreparedStatement {
    static let sql = """
        INSERT INTO th_host (name, pid, max_concurrency, lease_until)
        VALUES ($1, $2, $3, now() + $4::bigint * interval '1 millisecond')
        RETURNING host_id
        """
    typealias Row = Int64
    var name: String
    var pid: Int32
    var maxConcurrency: Int32
    var leaseMs: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(name)
        bindings.append(pid)
        bindings.append(maxConcurrency)
        bindings.append(leaseMs)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int64.self) }
}

/// Renews a live host's lease from the database's clock; no row: the host was declared dead (its
/// targets went to others) and must stop and register again.
struct RenewLease: PostgresPreparedStatement {
    static let sql = """
        UPDATE th_host SET lease_until = now() + $2::bigint * interval '1 millisecond'
        WHERE host_id = $1 AND state = 'live' RETURNING host_id
        """
    typealias Row = Int64
    var host: Int64
    var leaseMs: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(host)
        bindings.append(leaseMs)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int64.self) }
}

/// Declares dead the live hosts whose lease ended on the database's clock (skipping one that is
/// renewing or claiming right now: the next round sees it).
struct MarkExpiredHosts: PostgresPreparedStatement {
    static let sql = """
        UPDATE th_host h SET state = 'dead'
        FROM (SELECT host_id FROM th_host WHERE state = 'live' AND lease_until < now()
              ORDER BY host_id FOR UPDATE SKIP LOCKED) x
        WHERE h.host_id = x.host_id RETURNING h.host_id, h.name
        """
    typealias Row = (Int64, String)

    func makeBindings() throws -> PostgresBindings { PostgresBindings() }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// Gives the running targets of dead hosts back, at the head, with the attempt they used counted
/// (the claim counted it); their fence stays, so a late completion of the dead host is refused.
struct ReapTargets: PostgresPreparedStatement {
    static let sql = """
        WITH l AS MATERIALIZED (
          SELECT target_id FROM th_target
          WHERE state = 'running' AND owner_host IN (SELECT host_id FROM th_host WHERE state = 'dead')
          ORDER BY target_id FOR NO KEY UPDATE)
        UPDATE th_target t SET state = 'ready', owner_host = NULL, next_run_at = now(),
          head_deaths = t.head_deaths + 1, updated_at = now()
        FROM l WHERE t.target_id = l.target_id AND t.state = 'running'
        RETURNING t.target_id, t.head_seq, t.head_attempt, t.fence
        """
    typealias Row = (String, Int64, Int32, Int64)

    func makeBindings() throws -> PostgresBindings { PostgresBindings() }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// A head the host retries itself, keeping its claim (fenced): the next attempt is counted now
/// (`head_attempt`), so that a host that dies during the backoff or the attempt has used it, and
/// the error is kept on the task.
struct HoldForRetry: PostgresPreparedStatement {
    static let sql = """
        WITH d AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[])
                     AS d(target_id, seq, fence, attempt, error)),
        l AS MATERIALIZED (SELECT t.target_id FROM th_target t JOIN d ON t.target_id = d.target_id
                           ORDER BY t.target_id FOR NO KEY UPDATE OF t),
        t AS (UPDATE th_target t SET head_attempt = d.attempt, updated_at = now()
              FROM d JOIN l ON l.target_id = d.target_id
              WHERE t.target_id = d.target_id AND t.state = 'running' AND t.fence = d.fence AND t.head_seq = d.seq
              RETURNING d.target_id, d.seq, d.error),
        k AS (UPDATE th_task k SET last_error = t.error FROM t WHERE k.target_id = t.target_id AND k.seq = t.seq)
        SELECT target_id, seq FROM t
        """
    typealias Row = (String, Int64)
    var targets: [String]
    var seqs: [Int64]
    var fences: [Int64]
    var attempts: [Int64]
    var errors: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(targets)
        bindings.append(seqs)
        bindings.append(fences)
        bindings.append(attempts)
        bindings.append(errors)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// Gives claimed heads back (fenced) on a graceful stop: `ready` at once, at the head; an attempt
/// that never started is not counted (`uncount` 1), one cut off by the stop stays counted.
struct ReleaseHeads: PostgresPreparedStatement {
    static let sql = """
        WITH d AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS d(target_id, seq, fence, uncount)),
        l AS MATERIALIZED (SELECT t.target_id FROM th_target t JOIN d ON t.target_id = d.target_id
                           ORDER BY t.target_id FOR NO KEY UPDATE OF t),
        t AS (UPDATE th_target t SET state = 'ready', owner_host = NULL, next_run_at = now(),
                head_attempt = greatest(0, t.head_attempt - d.uncount), updated_at = now()
              FROM d JOIN l ON l.target_id = d.target_id
              WHERE t.target_id = d.target_id AND t.state = 'running' AND t.fence = d.fence AND t.head_seq = d.seq
              RETURNING d.target_id, d.seq)
        SELECT target_id, seq FROM t
        """
    typealias Row = (String, Int64)
    var targets: [String]
    var seqs: [Int64]
    var fences: [Int64]
    var uncount: [Int64]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(targets)
        bindings.append(seqs)
        bindings.append(fences)
        bindings.append(uncount)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// A host leaving gracefully: declared dead at once, so nobody waits for its lease to end (it
/// released its targets first; any it still holds go back with the next reap).
struct RetireHost: PostgresPreparedStatement {
    static let sql = "UPDATE th_host SET state = 'dead', lease_until = now() WHERE host_id = $1 RETURNING host_id"
    typealias Row = Int64
    var host: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(host)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int64.self) }
}

/// What the queue holds: tasks, and targets that can run now or soon (`ready`) or run (`running`).
struct QueueCounts: PostgresPreparedStatement {
    static let sql = """
        SELECT (SELECT count(*) FROM th_task),
               (SELECT count(*) FROM th_target WHERE state IN ('ready', 'running')),
               (SELECT count(*) FROM th_target WHERE state = 'parked')
        """
    typealias Row = (Int64, Int64, Int64)

    func makeBindings() throws -> PostgresBindings { PostgresBindings() }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}
