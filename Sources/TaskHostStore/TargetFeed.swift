import DequeModule
import TaskHostScheduler

/// Which queued rows the durable store hands to the scheduler, and when: by target, so that a
/// backlog of any size on one target never keeps another target's tasks out of the scheduler's
/// buffer (docs/semantics.md, "Where the window is").
///
/// A cursor reads the queue in arrival order. A target has at most `window` rows in the scheduler
/// (handed, not final yet); the cursor leaves a target's further rows in the queue and remembers
/// the first of them. When the target's handed rows drop to half the window, it is refilled from
/// the queue (its rows in order, up to the cursor's position), ahead of the cursor, in the order
/// targets got room. Parked targets get no rows; released ones are refilled. Each target's rows
/// are handed in arrival order, each row once.
///
/// A pure state machine: the store performs what ``next()`` asks (read, refill) and reports back.
package struct TargetFeed {
    /// A queued row: its place in arrival order (`row`) and its target. Concrete, not generic: the
    /// runtime calls the feed for every row, and a generic one was called unspecialized across the
    /// module boundary (a profile of the durable run).
    package typealias Row = StoredTask

    /// What the store does next.
    package enum Next {
        /// Hand this row to the scheduler.
        case row(Row)
        /// Read a target's queued rows with `from <= row <= through`, in order, at most `limit`,
        /// and report them with ``refilled(_:rows:limit:)``.
        case refill(TargetID, from: Int64, through: Int64, limit: Int)
        /// Read queued rows after this one, in arrival order, and report them with ``read(_:)``.
        case read(after: Int64)
    }

    /// Rows of one target in the scheduler at most.
    package let window: Int
    /// The last row the cursor read from the queue.
    package internal(set) var lastRead: Int64 = 0
    /// The last row the cursor handed on or left in the queue: a refill reads up to it, never
    /// beyond (later rows are still ahead of the cursor).
    package internal(set) var lastPassed: Int64 = 0
    @usableFromInline var buffer: Deque<Row> = []
    /// Rows handed to the scheduler and not final yet, per target.
    package internal(set) var handed: [TargetID: Int] = [:]
    /// The first row the cursor left in the queue, per target.
    package internal(set) var leftFrom: [TargetID: Int64] = [:]
    package internal(set) var parked: Set<TargetID> = []
    /// Drained targets: their rows up to this one were dead-lettered by the drain.
    @usableFromInline var drainedThrough: [TargetID: Int64] = [:]
    /// Targets with room again and rows left in the queue, in the order they got room.
    @usableFromInline var refills: Deque<TargetID> = []
    /// Rows a refill read, handed before anything else.
    @usableFromInline var refilled: Deque<Row> = []

    @inlinable
    package init(window: Int) {
        precondition(window >= 1, "a target's window is at least one row")
        self.window = window
    }

    /// Whether the cursor left rows in the queue that only a refill will hand on (parked
    /// targets' rows wait for a release and do not count).
    @inlinable
    package var isHoldingBack: Bool {
        !refilled.isEmpty || !refills.isEmpty || leftFrom.keys.contains { !parked.contains($0) }
    }

    @inlinable
    package mutating func next() -> Next {
        while let row = refilled.popFirst() {
            if let drained = drainedThrough[row.target], row.row <= drained { continue }
            return .row(row)
        }
        while let target = refills.popFirst() {
            guard let from = leftFrom[target], !parked.contains(target) else { continue }
            let room = window - handed[target, default: 0]
            guard room > 0 else { continue }
            return .refill(target, from: from, through: lastPassed, limit: room)
        }
        while let row = buffer.popFirst() {
            lastPassed = max(lastPassed, row.row)
            if let drained = drainedThrough[row.target], row.row <= drained { continue }
            // Earlier rows of its target wait in the queue: this one waits behind them.
            if leftFrom[row.target] != nil { continue }
            if parked.contains(row.target) || handed[row.target, default: 0] >= window {
                leftFrom[row.target] = row.row
                continue
            }
            handed[row.target, default: 0] += 1
            return .row(row)
        }
        return .read(after: lastRead)
    }

    /// Rows the cursor read (queued, after ``lastRead``, in arrival order).
    @inlinable
    package mutating func read(_ rows: [Row]) {
        guard let last = rows.last else { return }
        buffer.append(contentsOf: rows)
        lastRead = max(lastRead, last.row)
    }

    /// The rows a refill read: handed next. Fewer than `limit` means the target caught up with
    /// the cursor.
    @inlinable
    package mutating func refilled(_ target: TargetID, rows: [Row], limit: Int) {
        if rows.count < limit {
            leftFrom[target] = nil
        } else if let last = rows.last {
            leftFrom[target] = last.row + 1
        }
        guard !rows.isEmpty else { return }
        handed[target, default: 0] += rows.count
        refilled.append(contentsOf: rows)
    }

    /// A handed row of `target` became final (succeeded, dead-lettered, drained). Returns
    /// whether a refill is now due (wake the feed).
    @discardableResult
    @inlinable
    package mutating func finished(_ target: TargetID) -> Bool {
        let left = handed[target, default: 0] - 1
        handed[target] = left > 0 ? left : nil
        return refillIfRoom(target)
    }

    @inlinable
    mutating func refillIfRoom(_ target: TargetID) -> Bool {
        guard leftFrom[target] != nil, !parked.contains(target), handed[target, default: 0] <= window / 2,
            !refills.contains(target)
        else { return false }
        refills.append(target)
        return true
    }

    /// The target gets no more rows until ``release(_:)``.
    @inlinable
    package mutating func park(_ target: TargetID) { parked.insert(target) }

    /// Resumes a parked target; returns whether a refill is due.
    @discardableResult
    @inlinable
    package mutating func release(_ target: TargetID) -> Bool {
        guard parked.remove(target) != nil else { return false }
        return refillIfRoom(target)
    }

    /// An operator drained the target: its queued rows through `row` are dead letters now, its
    /// rows in the scheduler are dropped there. Later rows of the target are handed as usual.
    /// Returns whether a refill is due (rows after `row` that the cursor left in the queue).
    @discardableResult
    @inlinable
    package mutating func drained(_ target: TargetID, through row: Int64) -> Bool {
        parked.remove(target)
        handed[target] = nil
        drainedThrough[target] = max(drainedThrough[target] ?? 0, row)
        guard leftFrom[target] != nil else { return false }
        leftFrom[target] = row + 1
        return refillIfRoom(target)
    }
}
