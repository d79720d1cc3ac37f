import CTaskHostSystem
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The durable tasks running right now, in a small file mapped into memory beside the queue
/// (`queue.db.running`): a slot per running attempt holds the task's row and attempt number, set
/// before the attempt starts and cleared when it ends. The kernel keeps a mapped file's pages
/// when the process dies, so the next host learns which attempts a crash cut off (a plugin that
/// segfaults on one task) and counts them, without a SQLite write per attempt: a task that keeps
/// crashing the host runs out of attempts and is dead-lettered instead of crashing it forever.
package final class RunningJournal: @unchecked Sendable {
    /// A cut-off attempt left by a previous host.
    package struct Entry: Equatable {
        package var row: Int64
        package var attempt: Int
    }

    package static let slotCount = 4096
    package let path: String
    private let slots: UnsafeMutablePointer<UInt64>
    private let free: Mutex<[Int]>

    /// Maps the journal, creating it if needed. Read ``leftovers()`` before the first ``begin``.
    package init(path: String) throws(QueueError) {
        self.path = path
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw QueueError(
                path: path, message: "cannot open the journal of running tasks: \(String(cString: strerror(errno)))",
                remedy: "make the state folder writable")
        }
        defer { close(descriptor) }
        let size = Self.slotCount * MemoryLayout<UInt64>.stride
        // Allocated, not sparse: a store into a page the disk has no room for would be SIGBUS.
        let allocated = posix_fallocate(descriptor, 0, off_t(size))
        if allocated != 0 { errno = allocated }
        let mapped =
            allocated == 0 ? mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0) : MAP_FAILED
        guard let mapped, mapped != MAP_FAILED else {
            throw QueueError(
                path: path, message: "cannot map the journal of running tasks: \(String(cString: strerror(errno)))",
                remedy: "check that the state folder's file system has room and supports shared mappings")
        }
        slots = mapped.assumingMemoryBound(to: UInt64.self)
        free = Mutex(Array((0..<Self.slotCount).reversed()))
    }

    deinit {
        munmap(slots, Self.slotCount * MemoryLayout<UInt64>.stride)
    }

    /// The attempts that were running when the previous host stopped without ending them.
    package func leftovers() -> [Entry] {
        (0..<Self.slotCount).compactMap { index in
            let word = slots[index]
            return word == 0 ? nil : Entry(row: Int64(word >> 16), attempt: Int(word & 0xFFFF))
        }
    }

    /// Forgets the leftovers, once the queue has counted them.
    package func clear() {
        for index in 0..<Self.slotCount { th_store_release_u64(slots + index, 0) }
    }

    /// Records that `attempt` of `row` starts; nil when every slot is taken (the caller then
    /// leases the attempt in the queue instead).
    package func begin(row: Int64, attempt: Int) -> Int? {
        guard row > 0, row < 1 << 48, let slot = free.withLock({ $0.popLast() }) else { return nil }
        th_store_release_u64(slots + slot, UInt64(row) << 16 | UInt64(min(max(attempt, 1), 0xFFFF)))
        return slot
    }

    /// Records that the attempt in `slot` ended.
    package func end(_ slot: Int) {
        th_store_release_u64(slots + slot, 0)
        free.withLock { $0.append(slot) }
    }
}
