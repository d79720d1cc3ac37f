import Synchronization

/// Counts the tasks of one batch file still in flight; runs `done` once all are final and the
/// file was read to its end.
package final class BatchTracker: Sendable {
    package struct State {
        package var pending = 0
        package var failed = 0
        package var readToEnd = false
        package var finished = false
    }

    package let state = Mutex(State())
    /// The batch file's name in its folder.
    package let name: String
    package let done: @Sendable (_ failed: Int) -> Void

    package init(name: String, done: @escaping @Sendable (Int) -> Void) {
        self.name = name
        self.done = done
    }

    /// A batch resumed from the durable queue: `pending` tasks still queued, `failed` dead.
    package func resume(pending: Int, failed: Int) {
        state.withLock {
            $0.pending += pending
            $0.failed += failed
        }
    }

    package func added() { state.withLock { $0.pending += 1 } }

    package func final(failed: Bool) {
        let fire: Int? = state.withLock { state in
            state.pending -= 1
            if failed { state.failed += 1 }
            guard state.readToEnd, state.pending == 0, !state.finished else { return nil }
            state.finished = true
            return state.failed
        }
        if let fire { done(fire) }
    }

    /// A failure before admission (a malformed line of the batch).
    package func rejected() { state.withLock { $0.failed += 1 } }

    package func endOfFile() {
        let fire: Int? = state.withLock { state in
            state.readToEnd = true
            guard state.pending == 0, !state.finished else { return nil }
            state.finished = true
            return state.failed
        }
        if let fire { done(fire) }
    }
}
