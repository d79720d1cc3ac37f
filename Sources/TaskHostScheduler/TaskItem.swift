/// One unit of work: a payload for the executor and the target it acts on.
public struct TaskItem<Payload: Sendable>: Sendable {
    /// The resource this task acts on; tasks of one target never overlap.
    public var targetId: TargetID
    /// What the executor needs to do the work.
    public var payload: Payload
    /// Orders *target heads* against each other (higher first); never reorders tasks of one target.
    public var priority: Int
    /// An identifier chosen by the producer, passed through to the executor and to events.
    public var id: String?
    /// The concurrency pool the task runs in (see ``SchedulerConfiguration/poolLimits``): a cap
    /// shared by the tasks of one kind, for example one executor. 0 by default.
    public var pool: Int

    @inlinable
    public init(targetId: TargetID, payload: Payload, priority: Int = 0, id: String? = nil, pool: Int = 0) {
        self.targetId = targetId
        self.payload = payload
        self.priority = priority
        self.id = id
        self.pool = pool
    }
}

/// What the scheduler tells an executor about one execution of a task.
public struct ExecutionContext: Sendable, Hashable {
    /// The admission sequence number: unique per run, increasing in arrival order.
    public var sequence: UInt64
    /// The attempt number, starting at 1. An idempotent executor can key on `(sequence, attempt)`.
    public var attempt: Int

    @inlinable
    public init(sequence: UInt64, attempt: Int) {
        self.sequence = sequence
        self.attempt = attempt
    }
}
