/// What a run did, returned when it ends. Every admitted task is counted in exactly one of
/// `succeeded`, `deadLettered`, `parked` and `cancelled`.
public struct RunSummary<Payload: Sendable>: Sendable {
    /// Tasks accepted from the input.
    public var admitted = 0
    public var succeeded = 0
    /// Tasks whose last attempt failed: dead-lettered after failing, or at the head of a parked target.
    public var failed = 0
    /// Tasks sent to the dead-letter hook: failed ones and those of drained targets.
    public var deadLettered = 0
    /// Tasks left in parked targets when the run ended (the failed heads and their followers).
    public var parked = 0
    /// Tasks that did not finish because of shutdown: never started, waiting out a backoff,
    /// or cancelled while running.
    public var cancelled = 0
    /// Attempts that were retried.
    public var retries = 0
    /// The largest number of tasks that ran at once.
    public var maxRunning = 0
    /// The tasks counted in `parked` and `cancelled`, in per-target order, with their attempts.
    public var unfinished: [UnfinishedTask<Payload>] = []
    /// The error the input sequence threw, if it ended that way; admitted tasks still ran.
    public var inputError: (any Error)?

    public init() {}
}

/// A task that did not reach success or a dead letter.
public struct UnfinishedTask<Payload: Sendable>: Sendable {
    public enum Reason: String, Sendable {
        /// Its target is parked (it is the failed head, or queued behind it).
        case parked
        /// The run shut down before it could finish.
        case shutdown
    }
    public var task: TaskItem<Payload>
    public var sequence: UInt64
    /// Attempts already made.
    public var attempts: Int
    public var reason: Reason

    @inlinable
    init(task: TaskItem<Payload>, sequence: UInt64, attempts: Int, reason: Reason) {
        self.task = task
        self.sequence = sequence
        self.attempts = attempts
        self.reason = reason
    }
}

/// How an attempt ended, as told to ``SchedulerHooks/attemptFinished``.
public enum AttemptDisposition: Sendable, Hashable {
    case succeeded
    /// Failed; the task will be retried after the delay, holding its target's head.
    case retrying(after: Duration)
    /// Failed for the last time (or was drained); the task went to the dead-letter hook.
    case deadLettered
    /// Failed for the last time; its target is parked with the task at its head.
    case parked
    /// Cancelled by shutdown; the task is reported in ``RunSummary/unfinished``.
    case cancelled
}

/// A finished attempt, as told to ``SchedulerHooks/attemptFinished``.
public struct AttemptRecord<Payload: Sendable>: Sendable {
    public var task: TaskItem<Payload>
    public var context: ExecutionContext
    public var disposition: AttemptDisposition
    /// The error of a failed attempt.
    public var error: (any Error)?
    /// Time spent in the executor (zero for tasks drained without running).
    public var executionTime: Duration

    @inlinable
    init(
        task: TaskItem<Payload>, context: ExecutionContext, disposition: AttemptDisposition, error: (any Error)?,
        executionTime: Duration
    ) {
        self.task = task
        self.context = context
        self.disposition = disposition
        self.error = error
        self.executionTime = executionTime
    }
}

/// Callbacks for metrics, result sinks and dead letters. Every callback is optional; a `nil`
/// one costs nothing.
///
/// - Important: Callbacks run on the scheduler's threads, outside its lock, concurrently for
///   different targets. Keep them short and non-blocking.
public struct SchedulerHooks<Payload: Sendable>: Sendable {
    /// An attempt is about to start, after waiting `queueWait` since admission (or since its
    /// retry became due).
    public var attemptStarted: (@Sendable (TaskItem<Payload>, ExecutionContext, _ queueWait: Duration) -> Void)?
    /// An attempt finished; `disposition` says what happens to the task next.
    public var attemptFinished: (@Sendable (AttemptRecord<Payload>) -> Void)?
    /// An attempt ended and the policy decided what happens next (`disposition`; its
    /// `executionTime` is set): called before the attempt's slot and its target are given to
    /// another task, and awaited. A durable store records the outcome here, so that a task whose
    /// target moved on is never run again after a crash.
    ///
    /// - Important: While it runs, the target and the slot stay busy. A retry it records may
    ///   still end as ``AttemptDisposition/cancelled`` if a shutdown begins meanwhile (the task
    ///   goes back to the head of its target, as recorded); every other disposition stands.
    public var beforeRelease: (@Sendable (AttemptRecord<Payload>) async -> Void)?
    /// What a task brings from before this run, read once at admission: attempts already made
    /// (they count towards `maxAttempts`) and a time before which it must not start.
    public var history: (@Sendable (TaskItem<Payload>) -> TaskHistory?)?

    public init(
        attemptStarted: (@Sendable (TaskItem<Payload>, ExecutionContext, Duration) -> Void)? = nil,
        attemptFinished: (@Sendable (AttemptRecord<Payload>) -> Void)? = nil,
        beforeRelease: (@Sendable (AttemptRecord<Payload>) async -> Void)? = nil,
        history: (@Sendable (TaskItem<Payload>) -> TaskHistory?)? = nil
    ) {
        self.attemptStarted = attemptStarted
        self.attemptFinished = attemptFinished
        self.beforeRelease = beforeRelease
        self.history = history
    }
}

/// What a task brings from before this run (from a durable store): see ``SchedulerHooks/history``.
public struct TaskHistory: Sendable, Hashable {
    /// Attempts already made; the next one is `attempts + 1`.
    public var attempts: Int
    /// How long from admission the task must wait before it starts (a persisted backoff). It
    /// holds its target's head and no slot meanwhile. Honoured when the task is the first of its
    /// target that the scheduler holds, as a retried task is.
    public var startAfter: Duration

    public init(attempts: Int, startAfter: Duration = .zero) {
        self.attempts = attempts
        self.startAfter = startAfter
    }
}

/// Gauges of a running scheduler (SEMANTICS.md, item 12).
public struct SchedulerSnapshot: Sendable, Hashable {
    public var running = 0
    /// Admitted tasks waiting to start, backed-off and parked heads included.
    public var queued = 0
    /// Targets with at least one running task.
    public var busyTargets = 0
    /// Targets whose head may start as soon as a slot is free.
    public var readyTargets = 0
    public var backedOffTargets = 0
    /// Ready targets whose head waits for its pool (``SchedulerConfiguration/poolLimits``).
    public var poolBlockedTargets = 0
    public var parkedTargets = 0
    /// Targets that hold state (anything queued or running); emptied targets are removed.
    public var knownTargets = 0
    /// How long the oldest waiting head has waited, when hooks ask for latency.
    public var oldestHeadAge: Duration?
    public var intakeFinished = false
    /// The intake waits for room: the buffer is full (back-pressure is on).
    public var intakeWaitingForRoom = false
    public var shuttingDown = false
}
