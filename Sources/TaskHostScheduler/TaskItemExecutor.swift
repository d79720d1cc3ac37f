/// Runs tasks. The scheduler guarantees that two tasks with the same target id are never
/// inside `execute` at the same time.
///
/// Throw to report a failure: ``NonRetryableError`` skips the remaining attempts and
/// ``RetryAfterError`` asks for the next attempt after a given delay; any other error is
/// retried under the configured ``RetryPolicy``.
///
/// An executor whose work can finish without suspending can also implement
/// ``executeImmediately(_:context:)`` and return `true` from ``supportsImmediateExecution``:
/// the scheduler then runs such tasks inline, without a task switch or a continuation.
///
/// - Important: `execute` is called concurrently for tasks of *different* targets, from any
///   thread of the cooperative pool. Honour task cancellation: a timeout cancels the call.
public protocol TaskItemExecutor<Payload>: Sendable {
    associatedtype Payload: Sendable

    /// Runs one attempt of a task.
    /// - Parameters:
    ///   - task: the task; borrowed for the duration of the call.
    ///   - context: the admission sequence and attempt number of this execution.
    /// - Throws: any error to fail the attempt.
    func execute(_ task: TaskItem<Payload>, context: ExecutionContext) async throws

    /// Whether ``executeImmediately(_:context:)`` may be tried before ``execute(_:context:)``.
    var supportsImmediateExecution: Bool { get }

    /// Tries to run one attempt without suspending.
    ///
    /// Return ``ImmediateOutcome/deferred`` when the attempt cannot finish synchronously: the
    /// scheduler then calls ``execute(_:context:)`` for the same attempt.
    /// - Important: Must not block; it runs on the scheduler's own path.
    func executeImmediately(_ task: TaskItem<Payload>, context: ExecutionContext) -> ImmediateOutcome
}

extension TaskItemExecutor {
    @inlinable
    public var supportsImmediateExecution: Bool { false }

    @inlinable
    public func executeImmediately(_ task: TaskItem<Payload>, context: ExecutionContext) -> ImmediateOutcome {
        .deferred
    }
}

/// The result of ``TaskItemExecutor/executeImmediately(_:context:)``.
public enum ImmediateOutcome: Sendable {
    /// The attempt finished successfully.
    case succeeded
    /// The attempt failed with this error (classified like a thrown error).
    case failed(any Error)
    /// The attempt did not run; call `execute` instead.
    case deferred
}

/// An executor made of a closure.
public struct ClosureExecutor<Payload: Sendable>: TaskItemExecutor {
    @usableFromInline let body: @Sendable (TaskItem<Payload>, ExecutionContext) async throws -> Void

    @inlinable
    public init(_ body: @escaping @Sendable (TaskItem<Payload>, ExecutionContext) async throws -> Void) {
        self.body = body
    }

    @inlinable
    public func execute(_ task: TaskItem<Payload>, context: ExecutionContext) async throws {
        try await body(task, context)
    }
}

/// An executor made of a synchronous closure: every attempt runs inline, without suspending.
public struct SynchronousExecutor<Payload: Sendable>: TaskItemExecutor {
    @usableFromInline let body: @Sendable (TaskItem<Payload>, ExecutionContext) throws -> Void

    @inlinable
    public init(_ body: @escaping @Sendable (TaskItem<Payload>, ExecutionContext) throws -> Void) {
        self.body = body
    }

    @inlinable
    public var supportsImmediateExecution: Bool { true }

    @inlinable
    public func executeImmediately(_ task: TaskItem<Payload>, context: ExecutionContext) -> ImmediateOutcome {
        do {
            try body(task, context)
            return .succeeded
        } catch {
            return .failed(error)
        }
    }

    @inlinable
    public func execute(_ task: TaskItem<Payload>, context: ExecutionContext) async throws {
        try body(task, context)
    }
}

/// Thrown by an executor: the failure will not go away by retrying; skip the remaining attempts.
public struct NonRetryableError: Error, CustomStringConvertible {
    public var underlying: any Error
    public init(_ underlying: any Error) { self.underlying = underlying }
    public var description: String { "non-retryable: \(underlying)" }
}

/// Thrown by an executor: retry this attempt after `delay` (for example a server's `Retry-After`),
/// instead of the policy's backoff. The attempt still counts towards `maxAttempts`.
public struct RetryAfterError: Error, CustomStringConvertible {
    public var delay: Duration
    public var underlying: any Error
    public init(after delay: Duration, _ underlying: any Error) {
        self.delay = delay
        self.underlying = underlying
    }
    public var description: String { "retry after \(delay): \(underlying)" }
}

/// The failure recorded when an attempt ran past its timeout.
public struct TaskTimeoutError: Error, CustomStringConvertible {
    public var timeout: Duration
    public init(timeout: Duration) { self.timeout = timeout }
    public var description: String { "timed out after \(timeout)" }
}

/// The failure recorded for a task whose target an operator drained.
public struct DrainedError: Error, CustomStringConvertible {
    public var description: String { "drained by operator" }
}
