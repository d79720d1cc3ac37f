/// What happens to a task whose last attempt failed.
public enum ExhaustedPolicy: String, Sendable, Hashable, Codable {
    /// The task goes to the dead-letter sink with its error and attempts; its target goes on.
    case deadLetter
    /// The target stops, the failed task at its head, until an operator releases or drains it.
    case park
}

/// How the scheduler runs tasks.
public struct SchedulerConfiguration: Sendable {
    /// Global cap on running tasks; `nil` means unbounded.
    public var maxConcurrency: Int?
    /// Tasks of one target that may run at once. 1 (the default) gives exclusivity and per-target
    /// FIFO. Above 1 is the explicit `unordered` mode: no FIFO is claimed.
    public var perTargetLimit: Int
    /// The back-pressure bound: the scheduler stops pulling from the input while this many
    /// admitted tasks wait to start.
    public var bufferSize: Int
    public var retry: RetryPolicy
    /// A per-attempt timeout; the attempt's Swift task is cancelled when it expires and the
    /// attempt counts as failed. The target stays busy until the executor returns.
    public var timeout: Duration?
    public var onExhausted: ExhaustedPolicy
    /// Caps per pool (``TaskItem/pool``), below the global cap: `poolLimits[p]` tasks of pool `p`
    /// at most run at once; `nil`, or a pool past the end, is unbounded. A target whose head
    /// waits for its pool holds no slot and delays no task of another pool.
    public var poolLimits: [Int?] = []

    public init(
        maxConcurrency: Int? = nil,
        perTargetLimit: Int = 1,
        bufferSize: Int = 10_000,
        retry: RetryPolicy = .none,
        timeout: Duration? = nil,
        onExhausted: ExhaustedPolicy = .deadLetter
    ) {
        precondition(maxConcurrency.map { $0 >= 1 } ?? true, "maxConcurrency must be at least 1, or nil for unbounded")
        precondition(perTargetLimit >= 1, "perTargetLimit must be at least 1")
        precondition(bufferSize >= 1, "bufferSize must be at least 1")
        self.maxConcurrency = maxConcurrency
        self.perTargetLimit = perTargetLimit
        self.bufferSize = bufferSize
        self.retry = retry
        self.timeout = timeout
        self.onExhausted = onExhausted
    }
}
