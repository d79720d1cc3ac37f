import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

#if TASKHOST_TSAN
    /// The lock of the scheduler's state in ThreadSanitizer builds (`-Xswiftc -DTASKHOST_TSAN`).
    @usableFromInline
    typealias StateLock<Value: ~Copyable> = Locked<Value>
#else
    /// The lock of the scheduler's state: `Synchronization.Mutex`, the fastest on the hot path.
    @usableFromInline
    typealias StateLock<Value: ~Copyable> = Mutex<Value>
#endif

/// A value guarded by a pthread mutex, for ThreadSanitizer builds.
///
/// On Linux `Synchronization.Mutex` is a bare futex that ThreadSanitizer cannot see, so every
/// access under it is reported as a race; the sanitizer intercepts pthread mutexes. The release
/// build keeps `Mutex`, which measured about twice as fast on the scheduler's hot path.
@usableFromInline
final class Locked<Value: ~Copyable>: @unchecked Sendable {
    @usableFromInline
    let mutex: UnsafeMutablePointer<pthread_mutex_t>
    @usableFromInline
    var value: Value

    @inlinable
    init(_ value: consuming Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let status = pthread_mutex_init(mutex, nil)
        precondition(status == 0, "pthread_mutex_init failed: \(status)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inlinable
    @inline(__always)
    func withLock<Result: ~Copyable, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
