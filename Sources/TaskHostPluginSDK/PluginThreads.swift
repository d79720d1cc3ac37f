#if canImport(Glibc)
    import Glibc
#endif

/// The threads that run Swift plugins' asynchronous executions (``TaskHostPlugin/execute(_:)``
/// and what it awaits without an actor of its own): threads of the SDK's own, not the host's.
/// A plugin that blocks its thread, or spins after ignoring cancellation, takes these, never the
/// threads on which the host runs its timers, timeouts, shutdown and other plugins' completions.
/// Started at the first deferred execution; as many as the machine has processors, at least 2.
final class PluginThreads: TaskExecutor, @unchecked Sendable {
    static let shared = PluginThreads(count: max(2, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// Guarded by `mutex`: jobs from `head` on are waiting.
    private var jobs: [UnownedJob] = []
    private var head = 0

    init(count: Int) {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        for _ in 0..<count {
            var thread = pthread_t()
            let started = pthread_create(
                &thread, nil,
                { argument in
                    let threads = Unmanaged<PluginThreads>.fromOpaque(argument!).takeRetainedValue()
                    threads.work()
                },
                Unmanaged.passRetained(self).toOpaque())
            if started == 0 { pthread_detach(thread) }
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        pthread_mutex_lock(mutex)
        jobs.append(job)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    private func work() -> Never {
        while true {
            pthread_mutex_lock(mutex)
            while head == jobs.count { pthread_cond_wait(condition, mutex) }
            let job = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            }
            pthread_mutex_unlock(mutex)
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
