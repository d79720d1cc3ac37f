import TaskHostScheduler

/// An executor that answers each task with its output: what a pipeline's executors are (plugins
/// and libffi functions). The pipeline stores what it returns with the task; nothing reaches the
/// results through a side channel.
package protocol AnsweringExecutor: Sendable {
    /// Tries to run one attempt without suspending; ``Answer/deferred`` means: call
    /// ``answer(_:context:)`` for the same attempt.
    func answerImmediately(_ task: TaskItem<String>, context: ExecutionContext) -> Answer
    /// Runs one attempt (or awaits the one ``answerImmediately(_:context:)`` deferred).
    /// - Returns: its output, nil when it has none.
    /// - Throws: the attempt's failure, classified for the scheduler's retry policy.
    func answer(_ task: TaskItem<String>, context: ExecutionContext) async throws -> String?
}

/// What an inline attempt of an ``AnsweringExecutor`` came to.
package enum Answer {
    case output(String?)
    case failed(any Error)
    case deferred
}
