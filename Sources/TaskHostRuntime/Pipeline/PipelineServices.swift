import AsyncAlgorithms
import Logging
import ServiceLifecycle
import Synchronization
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

/// The long-lived parts of a run, each a `Service` of one `ServiceGroup`. The group starts them in
/// order and shuts them down in the reverse order, each once the one after it ended: sources stop
/// taking input, the scheduler gives running tasks their grace period, the command listener,
/// compaction and the operations endpoint stop, plugin instances are destroyed, the sinks flush,
/// the store closes.
///
/// A service here runs until the group's graceful shutdown reaches it, except the scheduler,
/// whose end (its input exhausted and every task final) shuts the group down, and the sources,
/// whose end (a file read to its end) ends only themselves.
struct PipelineService: Service, CustomStringConvertible {
    let description: String
    let body: @Sendable () async -> Void

    init(_ name: String, _ body: @escaping @Sendable () async -> Void) {
        self.description = name
        self.body = body
    }

    func run() async throws { await body() }
}

/// Runs `body` until it returns or a graceful shutdown reaches this service (then `body`'s task
/// is cancelled): for the parts that only wait or repeat.
func untilShutdown(_ body: @escaping @Sendable () async -> Void) async {
    _ = try? await cancelWhenGracefulShutdown { await body() }
}

/// Waits until a graceful shutdown reaches this service.
func waitForShutdown() async {
    try? await gracefulShutdown()
}

/// Signals that the executable forwards to a running pipeline (the library installs no
/// process-wide handler): operator commands or tasks enqueued by another process (SIGUSR1).
final class CommandWakeups: Sendable {
    let stream: AsyncStream<Void>
    let continuation: AsyncStream<Void>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }
}

/// What stops a run: a graceful stop (the group shuts down in order), or a stop at once (running
/// tasks are cancelled too). The executable calls it from its signal handlers; the durable queue
/// when it fails.
package final class PipelineStop: Sendable {
    struct State {
        var requests = 0
        var actions: (graceful: @Sendable () -> Void, now: @Sendable () -> Void)?
    }
    let state = Mutex(State())

    package init() {}

    /// Requests a stop: the first call stops gracefully, the next ones at once. Returns how many
    /// requests there were.
    @discardableResult
    package func request() -> Int {
        let (count, actions) = state.withLock { state in
            state.requests += 1
            return (state.requests, state.actions)
        }
        if let actions { count > 1 ? actions.now() : actions.graceful() }
        return count
    }

    /// Requests a stop at once (two requests).
    package func requestNow() {
        request()
        request()
    }

    func attach(graceful: @escaping @Sendable () -> Void, now: @escaping @Sendable () -> Void) {
        let count = state.withLock { state in
            state.actions = (graceful, now)
            return state.requests
        }
        if count >= 1 { graceful() }
        if count >= 2 { now() }
    }

    /// The run ended: later requests have nothing to stop, and the run's parts are released.
    func detach() {
        state.withLock { $0.actions = nil }
    }
}
