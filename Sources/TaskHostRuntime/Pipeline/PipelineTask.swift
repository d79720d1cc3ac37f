import Foundation
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

/// One task of a pipeline, as the scheduler carries it.
package struct PipelineTask: Sendable {
    /// The source it came from, and its order of arrival there.
    package var source: String
    package var seq: UInt64
    /// Index of its executor in the pipeline.
    package var executor: Int
    /// What the executor receives: the input's `data` (or the whole input when it has none), as JSON.
    package var payload: String
    /// The input line as it arrived, for dead letters.
    package var raw: String
    /// Timestamps and output of the latest attempt.
    package let log: AttemptLog
    /// Set for tasks of a spool-directory batch file: told when the task is final.
    package let batch: BatchTracker?
    /// Set for a task of the durable queue: its row and what its earlier attempts left.
    let durable: DurableRecord?
    /// Set for a task of the PostgreSQL queue: its claim.
    let postgres: PostgresRecord?

    init(
        source: String, seq: UInt64, executor: Int, payload: String, raw: String, log: AttemptLog,
        batch: BatchTracker?, durable: DurableRecord? = nil, postgres: PostgresRecord? = nil
    ) {
        self.source = source
        self.seq = seq
        self.executor = executor
        self.payload = payload
        self.raw = raw
        self.log = log
        self.batch = batch
        self.durable = durable
        self.postgres = postgres
    }
}

/// A durable task's row and what its earlier runs left, carried beside it through the scheduler.
final class DurableRecord: Sendable {
    let row: Int64
    /// Attempts made before this run (the scheduler counts on from them).
    let attempts: Int
    /// Unix milliseconds before which the task must not run (its persisted backoff).
    let notBefore: Int64
    /// Attempts during which the host died, across runs.
    let crashes: Int
    /// The running attempt's slot in the journal, -1 when none.
    let journalSlot = Atomic<Int>(-1)
    /// Set while this row, a suspect, holds the ``SuspectGate``: from its start until its outcome
    /// is committed (a suspect let in before that commit could crash the host and have this one
    /// counted again beside it).
    let holdsGate = Atomic<Bool>(false)

    init(row: Int64, attempts: Int, notBefore: Int64, crashes: Int) {
        self.row = row
        self.attempts = attempts
        self.notBefore = notBefore
        self.crashes = crashes
    }
}

/// What the last attempt of a task did, in wall-clock Unix nanoseconds (one clock for the host).
package final class AttemptLog: Sendable {
    struct State {
        var startedAt: Int64 = 0
        var finishedAt: Int64 = 0
        var output: String?
    }

    let state = Mutex(State())

    func started() { state.withLock { $0 = State(startedAt: unixNanoseconds()) } }
    func finished(output: String?) {
        state.withLock {
            $0.finishedAt = unixNanoseconds()
            $0.output = output
        }
    }
    var snapshot: (startedAt: Int64, finishedAt: Int64, output: String?) {
        state.withLock { ($0.startedAt, $0.finishedAt, $0.output) }
    }
}

/// Routes each pipeline task to its executor and keeps what its attempt returned with the task
/// (``AttemptLog``): timestamps and output, read by the results line.
final class PipelineExecutor: TaskItemExecutor, Sendable {
    typealias Payload = PipelineTask

    let executors: [any AnsweringExecutor]

    init(executors: [any AnsweringExecutor]) { self.executors = executors }

    var supportsImmediateExecution: Bool { true }

    private func inner(_ task: TaskItem<PipelineTask>) -> TaskItem<String> {
        TaskItem(targetId: task.targetId, payload: task.payload.payload, priority: task.priority, id: task.id)
    }

    func executeImmediately(_ task: TaskItem<PipelineTask>, context: ExecutionContext) -> ImmediateOutcome {
        task.payload.log.started()
        switch executors[task.payload.executor].answerImmediately(inner(task), context: context) {
        case .output(let output):
            task.payload.log.finished(output: output)
            return .succeeded
        case .failed(let error):
            task.payload.log.finished(output: nil)
            return .failed(error)
        case .deferred:
            return .deferred
        }
    }

    func execute(_ task: TaskItem<PipelineTask>, context: ExecutionContext) async throws {
        do {
            let output = try await executors[task.payload.executor].answer(inner(task), context: context)
            task.payload.log.finished(output: output)
        } catch {
            task.payload.log.finished(output: nil)
            throw error
        }
    }
}
