import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Reads a file descriptor in chunks on a dispatch thread, so that a blocking read (a pipe, a
/// terminal, a file being followed) never holds a thread of the cooperative pool. Waiting is
/// `poll` on the descriptor and a wake-up pipe: no polling loop, and `stop()` ends a wait.
package final class DescriptorReader: Sendable {
    package let descriptor: Int32
    package let wake: (read: Int32, write: Int32)
    package let stopped = Atomic<Bool>(false)

    package init(descriptor: Int32) {
        self.descriptor = descriptor
        var fds: [Int32] = [0, 0]
        _ = pipe(&fds)
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        wake = (fds[0], fds[1])
    }

    deinit {
        close(wake.read)
        close(wake.write)
    }

    package func stop() {
        stopped.store(true, ordering: .releasing)
        var byte: UInt8 = 1
        _ = write(wake.write, &byte, 1)
    }

    /// The next chunk; empty at end of file; nil when stopped or on an error.
    package func read(max: Int = 64 * 1024) async -> [UInt8]? {
        await read(from: descriptor, max: max)
    }

    /// The next chunk of `other` (a file this reader's owner opened); empty at end of file; nil
    /// when stopped or on an error.
    package func read(from other: Int32, max: Int = 64 * 1024) async -> [UInt8]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                DispatchQueue.global().async {
                    continuation.resume(returning: self.blockingRead(other, max: max))
                }
            }
        } onCancel: {
            stop()
        }
    }

    /// Waits until `other` (an inotify descriptor) is readable, then drains it. False when stopped.
    package func waitForEvent(on other: Int32) async -> Bool {
        await waitForEvents(on: other) != nil
    }

    /// Waits until `other` (an inotify descriptor) is readable and returns what it read; nil when
    /// stopped. With a `timeout` (milliseconds), returns no events once it passed.
    package func waitForEvents(on other: Int32, timeout: Int32 = -1) async -> [UInt8]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                DispatchQueue.global().async {
                    continuation.resume(returning: self.blockingWait(other, timeout: timeout))
                }
            }
        } onCancel: {
            stop()
        }
    }

    private func blockingWait(_ other: Int32, timeout: Int32) -> [UInt8]? {
        switch waitReadable(other, timeout: timeout) {
        case false: return nil
        case nil: return []
        case true: break
        }
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        let count = Glibc.read(other, &buffer, buffer.count)
        return count > 0 ? Array(buffer[..<count]) : []
    }

    private func blockingRead(_ descriptor: Int32, max: Int) -> [UInt8]? {
        while waitReadable(descriptor) == true {
            var buffer = [UInt8](repeating: 0, count: max)
            let count = Glibc.read(descriptor, &buffer, max)
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return nil
            }
            buffer.removeSubrange(count...)
            return buffer
        }
        return nil
    }

    /// Blocks until `fd` is readable (true), `stop()` was called (false) or `timeout` milliseconds
    /// passed (nil; -1 waits without end).
    private func waitReadable(_ fd: Int32, timeout: Int32 = -1) -> Bool? {
        var fds = [
            pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0),
        ]
        while !stopped.load(ordering: .acquiring) {
            let ready = poll(&fds, 2, timeout)
            if ready < 0 {
                if errno == EINTR { continue }
                return false
            }
            if ready == 0 { return nil }
            if fds[1].revents != 0 { return false }
            if fds[0].revents != 0 { return true }
        }
        return false
    }
}

/// Splits bytes into lines (LF or CRLF); keeps a partial last line until more arrives. Each line
/// comes with the offset of the byte after its newline, counted from `base` (a checkpoint).
package struct LineSplitter {
    private var pending: [UInt8] = []
    /// The offset of `pending[0]` in the input.
    private(set) var base: Int64 = 0

    package init(base: Int64 = 0) { self.base = base }

    package mutating func feed(_ bytes: [UInt8], _ line: (SourceLine, Int64) async -> Bool) async -> Bool {
        pending.append(contentsOf: bytes)
        var start = 0
        while let newline = pending[start...].firstIndex(of: 10) {
            var end = newline
            if end > start, pending[end - 1] == 13 { end -= 1 }
            let text = SourceLine(pending[start..<end])
            start = newline + 1
            if !text.isBlank {
                if !(await line(text, base + Int64(start))) {
                    consume(start)
                    return false
                }
            }
        }
        consume(start)
        return true
    }

    private mutating func consume(_ count: Int) {
        pending.removeSubrange(0..<count)
        base += Int64(count)
    }

    /// The last line when the input did not end with a newline, with the offset of its end.
    package mutating func finish() -> (SourceLine, Int64)? {
        defer {
            base += Int64(pending.count)
            pending.removeAll()
        }
        let text = SourceLine(pending)
        return text.isBlank ? nil : (text, base + Int64(pending.count))
    }
}

/// inotify on a file or folder (Linux).
package final class Watch: Sendable {
    package let descriptor: Int32

    package init?(path: String, mask: UInt32) {
        descriptor = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard descriptor >= 0 else { return nil }
        if inotify_add_watch(descriptor, path, mask) < 0 {
            close(descriptor)
            return nil
        }
    }

    deinit { close(descriptor) }
}

/// Reads a file of JSON lines from `offset` to its end (``followLines(path:from:stopper:logger:flush:_:)``
/// follows one as it grows). Each line comes with the offset of the byte after it.
package func readLines(
    path: String, from offset: Int64 = 0, stopper: StopSignal, flush: () async -> Void,
    _ line: @escaping (SourceLine, Int64) async -> Bool
) async throws(SourceError) {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else {
        throw SourceError(path: path, message: "cannot open (\(String(cString: strerror(errno))))")
    }
    defer { close(descriptor) }
    if offset > 0 { lseek(descriptor, off_t(offset), SEEK_SET) }
    let reader = DescriptorReader(descriptor: descriptor)
    stopper.register(reader)
    var splitter = LineSplitter(base: offset)
    while true {
        guard let chunk = await reader.read() else { return }
        if chunk.isEmpty { break }
        if !(await splitter.feed(chunk, line)) {
            await flush()
            return
        }
        await flush()
    }
    if let (last, end) = splitter.finish() { _ = await line(last, end) }
    await flush()
}

/// The device and inode of a file: a checkpoint applies only to the same file.
package func fileIdentity(_ path: String) -> (device: Int64, inode: Int64, size: Int64)? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return (Int64(info.st_dev), Int64(info.st_ino), Int64(info.st_size))
}

/// Readers to wake when the pipeline stops.
package final class StopSignal: Sendable {
    package init() {}

    package let readers = Mutex<[DescriptorReader]>([])
    package let waiters = Mutex<[CheckedContinuation<Void, Never>]>([])
    package let isStopped = Atomic<Bool>(false)

    /// Returns once the pipeline stops.
    package func wait() async {
        await withCheckedContinuation { continuation in
            let now = waiters.withLock { waiters -> Bool in
                if isStopped.load(ordering: .acquiring) { return true }
                waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    package func register(_ reader: DescriptorReader) {
        let stopNow = readers.withLock { readers -> Bool in
            readers.append(reader)
            return isStopped.load(ordering: .acquiring)
        }
        if stopNow { reader.stop() }
    }

    package func stop() {
        let waiting = waiters.withLock { waiters -> [CheckedContinuation<Void, Never>] in
            isStopped.store(true, ordering: .releasing)
            defer { waiters.removeAll() }
            return waiters
        }
        for reader in readers.withLock({ $0 }) { reader.stop() }
        for waiter in waiting { waiter.resume() }
    }
}

/// The file names in a buffer of inotify events.
package func inotifyNames(_ bytes: [UInt8]) -> [String] {
    var names: [String] = []
    var offset = 0
    let header = MemoryLayout<inotify_event>.size
    while offset + header <= bytes.count {
        let length = bytes.withUnsafeBytes { Int($0.load(fromByteOffset: offset + 12, as: UInt32.self)) }
        let start = offset + header
        let end = min(start + length, bytes.count)
        let name = bytes[start..<end].prefix { $0 != 0 }
        if !name.isEmpty { names.append(String(decoding: name, as: UTF8.self)) }
        offset = start + length
    }
    return names
}
