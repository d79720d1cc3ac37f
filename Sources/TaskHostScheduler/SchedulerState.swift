import DequeModule
import HeapModule
import Synchronization

// `@inlinable` and `@usableFromInline` throughout: see the note at the top of Scheduler.swift.

/// Successes of detached attempts that the holder of the intake ran and has not yet recorded in
/// the state: it records them with its next admission, under the lock it takes anyway, instead
/// of taking the lock once more per task.
///
/// Only the intake writes `owed` (its count since it last settled), outside the lock. Code under
/// the lock that reads the counts (a worker taking a slot, the end of the run, a snapshot) first
/// absorbs what it has not seen (``SchedulerState/absorbIntakeDebt()``). Code under the lock that
/// must wait for a slot or for the end of running attempts raises `wanted`, then absorbs again;
/// the intake publishes each success, then reads `wanted`, and settles at once when it is up.
/// Both sides are sequentially consistent, so a success published while the state starts to wait
/// is seen by one of them: it never holds a slot while the intake waits for its source.
@usableFromInline
final class IntakeDebt: Sendable {
    @usableFromInline
    let owed = Atomic<Int>(0)
    @usableFromInline
    let wanted = Atomic<Bool>(false)
}

/// One admitted task with what the scheduler knows of it.
@usableFromInline
struct Entry<Payload: Sendable>: Sendable {
    @usableFromInline
    var task: TaskItem<Payload>
    @usableFromInline
    var sequence: UInt64
    /// Attempts already started.
    @usableFromInline
    var attempts: Int
    /// When it became eligible to start (admission, or the end of its backoff); only tracked
    /// when latency is observed.
    @usableFromInline
    var readySince: Duration?

    @inlinable
    init(task: TaskItem<Payload>, sequence: UInt64, attempts: Int, readySince: Duration?) {
        self.task = task
        self.sequence = sequence
        self.attempts = attempts
        self.readySince = readySince
    }
}

/// What the retry policy decided for a failed attempt.
@usableFromInline
enum Verdict: Sendable {
    case retry(after: Duration)
    /// No attempt left (or a non-retryable error): dead letter or park, as configured.
    case exhausted
}

/// A task handed to an executor: which target slot it holds and the entry itself.
@usableFromInline
struct Dispatch<Payload: Sendable>: Sendable {
    @usableFromInline
    var slot: Int32
    @usableFromInline
    var generation: UInt32
    @usableFromInline
    var entry: Entry<Payload>
    /// Set when `executeImmediately` already started this attempt and deferred it: the worker
    /// then calls only `execute`, and keeps the original start time.
    @usableFromInline
    var immediateTried = false
    @usableFromInline
    var startedAt: Duration?

    @inlinable
    init(
        slot: Int32, generation: UInt32, entry: Entry<Payload>, immediateTried: Bool = false,
        startedAt: Duration? = nil
    ) {
        self.slot = slot
        self.generation = generation
        self.entry = entry
        self.immediateTried = immediateTried
        self.startedAt = startedAt
    }

    @inlinable
    var context: ExecutionContext { ExecutionContext(sequence: entry.sequence, attempt: entry.attempts) }
}

/// A FIFO of one target's tasks with the head stored inline, so that a target with one task
/// (the common case with many targets) needs no allocation.
@usableFromInline
struct TargetQueue<Element: Sendable>: Sendable {
    @usableFromInline
    var first: Element?
    @usableFromInline
    var rest = Deque<Element>()

    @inlinable
    var isEmpty: Bool { first == nil }
    @inlinable
    var count: Int { first == nil ? 0 : 1 + rest.count }

    @inlinable
    mutating func append(_ element: Element) {
        if first == nil { first = element } else { rest.append(element) }
    }

    @inlinable
    mutating func prepend(_ element: Element) {
        if let head = first { rest.prepend(head) }
        first = element
    }

    @inlinable
    mutating func popFirst() -> Element? {
        // Moved out, not copied: the head is taken, then replaced.
        guard let head = first.take() else { return nil }
        first = rest.popFirst()
        return head
    }

    @inlinable
    mutating func modifyFirst(_ body: (inout Element) -> Void) {
        guard var head = first else { return }
        first = nil
        body(&head)
        first = head
    }

    @inlinable
    mutating func removeAll() -> [Element] {
        var all: [Element] = []
        all.reserveCapacity(count)
        while let element = popFirst() { all.append(element) }
        rest = Deque()
        return all
    }
}

@usableFromInline
enum TargetPhase: UInt8, Sendable {
    /// Not in the ready structure: nothing to start, or at its running limit.
    case idle
    /// In the ready structure, waiting for a slot.
    case ready
    /// Its head waits out a retry delay; a timer entry will make it ready.
    case backoff
    /// Stopped by the `park` policy or an operator.
    case parked
    /// Ready, but its head's pool is at its cap: waits in the pool's queue, holding no slot.
    case blocked
}

@usableFromInline
struct TargetSlot<Payload: Sendable>: Sendable {
    @usableFromInline
    var id: TargetID
    @usableFromInline
    var queue = TargetQueue<Entry<Payload>>()
    @usableFromInline
    var running: Int32 = 0
    @usableFromInline
    var phase: TargetPhase = .idle
    /// Bumped when the slot is reused for another target: stale references are recognised.
    @usableFromInline
    var generation: UInt32 = 0
    /// Bumped whenever the target enters the ready structure or a backoff: stale ready and timer
    /// entries are skipped (lazy deletion instead of a scan).
    @usableFromInline
    var token: UInt32 = 0
    /// When it last became ready: its place when it comes back from its pool's queue.
    @usableFromInline
    var readyOrder: UInt64 = 0
    /// Parked because its head's last attempt failed (the `park` policy): that head counts as
    /// failed until a release gives it new attempts.
    @usableFromInline
    var parkedByFailure = false

    @inlinable
    init(id: TargetID) { self.id = id }
}

@usableFromInline
struct ReadyRef: Sendable {
    @usableFromInline
    var slot: Int32
    @usableFromInline
    var token: UInt32

    @inlinable
    init(slot: Int32, token: UInt32) {
        self.slot = slot
        self.token = token
    }
}

@usableFromInline
struct RankedRef: Comparable, Sendable {
    @usableFromInline
    var priority: Int
    @usableFromInline
    var order: UInt64
    @usableFromInline
    var ref: ReadyRef

    @inlinable
    init(priority: Int, order: UInt64, ref: ReadyRef) {
        self.priority = priority
        self.order = order
        self.ref = ref
    }

    @inlinable
    static func < (lhs: RankedRef, rhs: RankedRef) -> Bool {
        if lhs.priority != rhs.priority { return lhs.priority < rhs.priority }
        return lhs.order > rhs.order  // earlier-ready is "larger": popMax serves it first
    }
    @inlinable
    static func == (lhs: RankedRef, rhs: RankedRef) -> Bool {
        lhs.priority == rhs.priority && lhs.order == rhs.order
    }
}

/// Deadlines and stamps are `Duration`s since the scheduler's epoch (an instant of its clock):
/// `Duration` is frozen, so the records that carry one have a layout known at compile time (a
/// clock's `Instant`, such as `ContinuousClock.Instant`, is resilient: every copy of a record
/// holding one would go through value witnesses).
@usableFromInline
struct TimerEntry: Comparable, Sendable {
    @usableFromInline
    var deadline: Duration
    @usableFromInline
    var slot: Int32
    @usableFromInline
    var generation: UInt32
    @usableFromInline
    var token: UInt32

    @inlinable
    init(deadline: Duration, slot: Int32, generation: UInt32, token: UInt32) {
        self.deadline = deadline
        self.slot = slot
        self.generation = generation
        self.token = token
    }

    @inlinable
    static func < (lhs: Self, rhs: Self) -> Bool { lhs.deadline < rhs.deadline }
    @inlinable
    static func == (lhs: Self, rhs: Self) -> Bool { lhs.deadline == rhs.deadline }
}

@usableFromInline
enum AttemptResult: Sendable {
    case success
    case failure(any Error)
}

/// Events the supervisor (the task that owns the worker group) must act on.
@usableFromInline
struct SupervisorEvents: Sendable {
    @usableFromInline
    var spawnWorkers = 0
    @usableFromInline
    var finished = false
    @usableFromInline
    var cancelNow = false
    @usableFromInline
    var startGraceTimer: Duration?

    @inlinable
    init() {}

    @inlinable
    var isEmpty: Bool { spawnWorkers == 0 && !finished && !cancelNow && startGraceTimer == nil }
}

/// Continuations to resume and events to deliver once the lock is released.
@usableFromInline
struct Wakeups<Payload: Sendable>: Sendable {
    @usableFromInline
    var workers: [(UnsafeContinuation<Dispatch<Payload>?, Never>, Dispatch<Payload>?)] = []
    @usableFromInline
    var intake: UnsafeContinuation<Bool, Never>?
    @usableFromInline
    var intakeValue = true
    @usableFromInline
    var timer: UnsafeContinuation<Void, Never>?
    @usableFromInline
    var supervisor: UnsafeContinuation<SupervisorEvents, Never>?
    @usableFromInline
    var supervisorEvents = SupervisorEvents()

    @inlinable
    init() {}

    @inlinable
    func perform() {
        for (worker, dispatch) in workers { worker.resume(returning: dispatch) }
        intake?.resume(returning: intakeValue)
        timer?.resume()
        supervisor?.resume(returning: supervisorEvents)
    }
}

/// The scheduler's whole mutable state: a state machine driven under one lock. Its methods
/// never call user code; they return what the caller must do after unlocking.
@usableFromInline
struct SchedulerState<Payload: Sendable>: ~Copyable {
    @usableFromInline
    typealias Task = Entry<Payload>
    @usableFromInline
    typealias Work = Dispatch<Payload>

    @usableFromInline
    enum Phase: Sendable { case running, draining, finished }

    @usableFromInline
    let cap: Int
    @usableFromInline
    let perTargetLimit: Int32
    @usableFromInline
    let bufferSize: Int
    @usableFromInline
    let resumeIntakeBelow: Int
    @usableFromInline
    let retry: RetryPolicy
    @usableFromInline
    let onExhausted: ExhaustedPolicy

    @usableFromInline
    var phase = Phase.running
    @usableFromInline
    var intakeFinished = false

    // Targets.
    @usableFromInline
    var targets: [TargetSlot<Payload>] = []
    @usableFromInline
    var freeSlots: [Int32] = []
    @usableFromInline
    var index: [TargetID: Int32] = [:]

    // Ready targets: priority 0 in arrival order, others in a heap by (priority, order).
    @usableFromInline
    var readyFIFO = Deque<ReadyRef>()
    @usableFromInline
    var readyRanked = Heap<RankedRef>()
    @usableFromInline
    var readyOrder: UInt64 = 0
    /// Targets waiting to start: in the ready structure, or blocked by their pool.
    @usableFromInline
    var readyCount = 0
    @usableFromInline
    var backoffCount = 0

    // Pools: caps below the global one.
    @usableFromInline
    let poolCaps: [Int]
    @usableFromInline
    var poolRunning: [Int]
    @usableFromInline
    var blocked: [Deque<ReadyRef>]
    @usableFromInline
    var blockedCount = 0

    // Backoff deadlines.
    @usableFromInline
    var timers = Heap<TimerEntry>()
    @usableFromInline
    var timerSleepingUntil: Duration?
    @usableFromInline
    var timerWaiter: UnsafeContinuation<Void, Never>?

    // Execution.
    @usableFromInline
    var running = 0
    @usableFromInline
    var queued = 0
    @usableFromInline
    var parkedQueued = 0
    @usableFromInline
    var nextSequence: UInt64 = 0
    @usableFromInline
    var workers = 0
    @usableFromInline
    var spawnsPending = 0
    @usableFromInline
    var idleWorkers: [UnsafeContinuation<Work?, Never>] = []
    /// Dispatches the intake could not run inline; workers take these first.
    @usableFromInline
    var handoff = Deque<Work>()

    // Intake and supervisor.
    @usableFromInline
    var intakeWaiter: UnsafeContinuation<Bool, Never>?
    @usableFromInline
    var intakeStopRequested = false
    @usableFromInline
    var supervisorWaiter: UnsafeContinuation<SupervisorEvents, Never>?
    @usableFromInline
    var supervisorPending = SupervisorEvents()

    @usableFromInline
    var summary = RunSummary<Payload>()

    /// The intake's unrecorded successes, and how many of them the state already absorbed.
    @usableFromInline
    let debt: IntakeDebt
    @usableFromInline
    var absorbedDebt = 0

    init(configuration: SchedulerConfiguration, debt: IntakeDebt = IntakeDebt()) {
        self.debt = debt
        cap = configuration.maxConcurrency ?? Int.max
        perTargetLimit = Int32(clamping: configuration.perTargetLimit)
        bufferSize = configuration.bufferSize
        resumeIntakeBelow = max(1, configuration.bufferSize - max(1, configuration.bufferSize / 4))
        retry = configuration.retry
        onExhausted = configuration.onExhausted
        poolCaps = configuration.poolLimits.map { $0 ?? Int.max }
        poolRunning = Array(repeating: 0, count: poolCaps.count)
        blocked = Array(repeating: Deque(), count: poolCaps.count)
    }

    // MARK: Pools

    @inlinable
    @inline(__always)
    func poolFull(_ pool: Int) -> Bool { pool < poolCaps.count && poolRunning[pool] >= poolCaps[pool] }

    @inlinable
    @inline(__always)
    mutating func poolStarted(_ pool: Int) { if pool < poolCaps.count { poolRunning[pool] += 1 } }

    /// A task of `pool` ended: the longest-waiting target blocked by that pool becomes ready.
    @inlinable
    mutating func poolFinished(_ pool: Int) {
        guard pool < poolCaps.count else { return }
        poolRunning[pool] -= 1
        while let ref = blocked[pool].popFirst() {
            let i = Int(ref.slot)
            guard targets[i].phase == .blocked, targets[i].token == ref.token else { continue }
            blockedCount -= 1
            targets[i].phase = .ready
            targets[i].token &+= 1
            let fresh = ReadyRef(slot: ref.slot, token: targets[i].token)
            let priority = targets[i].queue.first?.task.priority ?? 0
            if priority == 0 {
                readyFIFO.prepend(fresh)  // it was ready before those behind it
            } else {
                readyRanked.insert(RankedRef(priority: priority, order: targets[i].readyOrder, ref: fresh))
            }
            return
        }
    }

    // MARK: Targets

    @inlinable
    mutating func slot(for id: TargetID) -> Int32 {
        if let slot = index[id] { return slot }
        let slot: Int32
        if let free = freeSlots.popLast() {
            slot = free
            targets[Int(slot)].id = id
        } else {
            slot = Int32(targets.count)
            targets.append(TargetSlot(id: id))
        }
        index[id] = slot
        return slot
    }

    @inlinable
    mutating func removeIfEmpty(_ slot: Int32) {
        let i = Int(slot)
        guard targets[i].queue.isEmpty, targets[i].running == 0, targets[i].phase == .idle else { return }
        index.removeValue(forKey: targets[i].id)
        targets[i].generation &+= 1
        targets[i].token &+= 1
        targets[i].id = .integer(0)
        freeSlots.append(slot)
    }

    /// Puts the target where it belongs after a change: ready, idle, or removed.
    @inlinable
    mutating func settle(_ slot: Int32) {
        let i = Int(slot)
        switch targets[i].phase {
        case .backoff, .parked, .ready, .blocked:
            return
        case .idle:
            if let head = targets[i].queue.first, targets[i].running < perTargetLimit, phase == .running {
                targets[i].phase = .ready
                targets[i].token &+= 1
                targets[i].readyOrder = readyOrder
                let ref = ReadyRef(slot: slot, token: targets[i].token)
                let priority = head.task.priority
                if priority == 0 {
                    readyFIFO.append(ref)
                } else {
                    readyRanked.insert(RankedRef(priority: priority, order: readyOrder, ref: ref))
                }
                readyOrder &+= 1
                readyCount += 1
            } else {
                removeIfEmpty(slot)
            }
        }
    }

    @inlinable
    mutating func popReady() -> Int32? {
        while true {
            let ref: ReadyRef
            if let top = readyRanked.max, top.priority > 0 || readyFIFO.isEmpty {
                ref = readyRanked.removeMax().ref
            } else if let first = readyFIFO.popFirst() {
                ref = first
            } else {
                return nil
            }
            let i = Int(ref.slot)
            if targets[i].phase == .ready, targets[i].token == ref.token {
                if let pool = targets[i].queue.first?.task.pool, poolFull(pool) {
                    // Its pool is full: it waits there, and the next ready target is tried.
                    targets[i].phase = .blocked
                    targets[i].token &+= 1
                    blocked[pool].append(ReadyRef(slot: ref.slot, token: targets[i].token))
                    blockedCount += 1
                    continue
                }
                targets[i].phase = .idle
                readyCount -= 1
                return ref.slot
            }
        }
    }

    /// Leaves the ready structure lazily: its entry becomes stale.
    @inlinable
    mutating func unready(_ slot: Int32) {
        let i = Int(slot)
        if targets[i].phase == .ready || targets[i].phase == .blocked {
            if targets[i].phase == .blocked { blockedCount -= 1 }
            targets[i].phase = .idle
            targets[i].token &+= 1
            readyCount -= 1
        }
    }

    // MARK: Dispatch

    /// Takes the next task to run, or nil when no slot is free or nothing is ready.
    @inlinable
    mutating func takeNext() -> Work? {
        // Deferred attempts already hold their slot and were started by the executor.
        if let work = handoff.popFirst() { return work }
        absorbIntakeDebt()
        if phase == .running, running >= cap, readyCount > 0 { wantSlots() }
        guard phase == .running, running < cap else { return nil }
        guard let slot = popReady() else { return nil }
        return start(slot)
    }

    @inlinable
    mutating func start(_ slot: Int32) -> Work {
        let i = Int(slot)
        var entry = targets[i].queue.popFirst()!
        entry.attempts += 1
        queued -= 1
        running += 1
        poolStarted(entry.task.pool)
        if running > summary.maxRunning { summary.maxRunning = running }
        targets[i].running += 1
        let work = Work(slot: slot, generation: targets[i].generation, entry: entry)
        settle(slot)  // unordered mode: may be ready again at once, at the tail
        return work
    }

    /// Hands ready work to idle workers, and asks for new workers when none is idle.
    @inlinable
    mutating func wakeWorkers(_ wakeups: inout Wakeups<Payload>) {
        while !idleWorkers.isEmpty, let work = takeNext() {
            wakeups.workers.append((idleWorkers.removeLast(), work))
        }
        // Deferred attempts already hold their slots; ready targets need a free one.
        absorbIntakeDebt()
        if phase == .running, readyCount > cap - running { wantSlots() }
        let startable = handoff.count + (phase == .running ? max(0, min(readyCount, cap - running)) : 0)
        if startable > 0, idleWorkers.isEmpty {
            let wanted = min(startable, cap - workers) - spawnsPending
            if wanted > 0 {
                spawnsPending += wanted
                notifySupervisor(&wakeups) { $0.spawnWorkers += wanted }
            }
        }
    }

    /// A worker that found nothing to do: parks it unless work appeared or the run is over.
    @inlinable
    mutating func parkWorker(
        _ continuation: UnsafeContinuation<Work?, Never>, _ wakeups: inout Wakeups<Payload>
    ) -> (Work?, resumeNow: Bool) {
        if phase == .finished { return (nil, true) }
        if let work = takeNext() {
            wakeWorkers(&wakeups)  // more may be startable (unordered targets, several ready)
            return (work, true)
        }
        idleWorkers.append(continuation)
        return (nil, false)
    }

    @inlinable
    mutating func workerStarted() {
        spawnsPending -= 1
        workers += 1
    }

    @inlinable
    mutating func workerExited() {
        workers -= 1
    }

    // MARK: Intake

    @usableFromInline
    enum Admission: Sendable {
        /// Queued; the scheduler will start it.
        case queued
        /// The target was idle and a slot free: the caller runs it now.
        indirect case runInline(Work)
        /// The target holds no state and a slot is free: the caller runs the task now, and no
        /// target state is created unless the attempt fails or defers (``adoptDetached``).
        /// Exclusivity holds because only the intake admits tasks, and it is busy running this one.
        case runDetached(sequence: UInt64)
    }

    /// Accepts a task from the input. Returns whether the intake may pull the next one at once.
    @inlinable
    mutating func admit(
        _ task: TaskItem<Payload>,
        now: Duration?,
        inline: Bool,
        detachable: Bool,
        _ wakeups: inout Wakeups<Payload>
    ) -> Admission {
        let sequence = nextSequence
        nextSequence &+= 1
        summary.admitted += 1
        if detachable, readyCount == 0, handoff.isEmpty, running < cap, phase == .running, !poolFull(task.pool),
            index[task.targetId] == nil
        {
            running += 1
            poolStarted(task.pool)
            if running > summary.maxRunning { summary.maxRunning = running }
            return .runDetached(sequence: sequence)
        }
        let slot = slot(for: task.targetId)
        queued += 1
        return place(
            Task(task: task, sequence: sequence, attempts: 0, readySince: now), slot: slot, inline: inline, &wakeups)
    }

    /// Accepts a task that brings a history (``SchedulerHooks/history``): its attempts count on, and
    /// a start-after time holds its target's head, as a retry's backoff does. Never detached.
    @inlinable
    mutating func admit(
        _ task: TaskItem<Payload>,
        history: TaskHistory,
        now: Duration?,
        inline: Bool,
        _ wakeups: inout Wakeups<Payload>
    ) -> Admission {
        let sequence = nextSequence
        nextSequence &+= 1
        summary.admitted += 1
        let slot = slot(for: task.targetId)
        let i = Int(slot)
        let entry = Task(task: task, sequence: sequence, attempts: history.attempts, readySince: now)
        queued += 1
        if history.startAfter > .zero, let now, targets[i].queue.isEmpty, targets[i].phase == .idle,
            targets[i].running == 0
        {
            // Not to start before its time (a persisted backoff): the target waits it out holding
            // no slot, as after a failed attempt.
            targets[i].queue.append(entry)
            targets[i].phase = .backoff
            backoffCount += 1
            targets[i].token &+= 1
            addTimer(
                TimerEntry(
                    deadline: now + history.startAfter, slot: slot, generation: targets[i].generation,
                    token: targets[i].token), &wakeups)
            return .queued
        }
        return place(entry, slot: slot, inline: inline, &wakeups)
    }

    /// An admitted task joins its target: started at once (inline) when its target and a slot are
    /// free and nothing else is ready, queued otherwise.
    @inlinable
    @inline(__always)
    mutating func place(_ entry: Task, slot: Int32, inline: Bool, _ wakeups: inout Wakeups<Payload>) -> Admission {
        let i = Int(slot)
        if inline, targets[i].queue.isEmpty, targets[i].phase == .idle, targets[i].running < perTargetLimit,
            readyCount == 0, handoff.isEmpty, running < cap, phase == .running, !poolFull(entry.task.pool)
        {
            targets[i].queue.append(entry)
            return .runInline(start(slot))
        }
        targets[i].queue.append(entry)
        if targets[i].phase == .parked { parkedQueued += 1 }
        settle(slot)
        wakeWorkers(&wakeups)
        return .queued
    }

    /// A detached task that succeeded: it frees its slot, no target state was ever made. With
    /// `takeNext`, returns the next ready task for the caller to run.
    @inlinable
    mutating func completeDetached(pool: Int, takeNext: Bool, _ wakeups: inout Wakeups<Payload>) -> Work? {
        running -= 1
        poolFinished(pool)
        summary.succeeded += 1
        let next = takeNext && (readyCount > 0 || !handoff.isEmpty) ? self.takeNext() : nil
        if readyCount > 0 || !handoff.isEmpty { wakeWorkers(&wakeups) }
        checkFinished(&wakeups)
        return next
    }

    /// Records the intake's successes this state has not seen yet (see ``IntakeDebt``): one
    /// load when there are none.
    @inlinable
    @inline(__always)
    mutating func absorbIntakeDebt() {
        let owed = debt.owed.load(ordering: .sequentiallyConsistent)
        if owed > absorbedDebt {
            recordDetachedSuccesses(owed - absorbedDebt)
            absorbedDebt = owed
        }
    }

    /// The state waits for a slot, or for running attempts to end: asks the intake to settle
    /// each success at once from now on, then absorbs what it published before it saw the ask.
    /// The caller reads the counts again afterwards.
    @inlinable
    mutating func wantSlots() {
        if !debt.wanted.load(ordering: .relaxed) { debt.wanted.store(true, ordering: .sequentiallyConsistent) }
        absorbIntakeDebt()
    }

    /// The intake records its successes since it last settled (`owed`), under the lock. When the
    /// state had asked for them, it checks again whether it still waits (and asks again if so).
    @inlinable
    mutating func settleIntakeDebt(_ owed: Int, _ wakeups: inout Wakeups<Payload>) {
        let unseen = owed - absorbedDebt
        absorbedDebt = 0
        debt.owed.store(0, ordering: .relaxed)
        let wasWanted = debt.wanted.load(ordering: .relaxed)
        if wasWanted { debt.wanted.store(false, ordering: .relaxed) }
        if unseen > 0 { recordDetachedSuccesses(unseen) }
        guard unseen > 0 || wasWanted else { return }
        if readyCount > 0 || !handoff.isEmpty { wakeWorkers(&wakeups) }
        checkFinished(&wakeups)
    }

    /// Successes of detached attempts of unlisted pools (no pool count to lower): they free
    /// their slots.
    @inlinable
    mutating func recordDetachedSuccesses(_ count: Int) {
        running -= count
        summary.succeeded += count
    }

    /// Gives the target of a detached attempt that is still running its state: later tasks of
    /// the target queue behind it. The attempt completes through ``complete`` with the returned
    /// slot.
    @inlinable
    mutating func adoptRunning(_ id: TargetID) -> AdoptedTarget {
        let slot = slot(for: id)
        targets[Int(slot)].running += 1
        return .init(slot: slot, generation: targets[Int(slot)].generation)
    }

    /// Gives a detached task the state of a dispatched one, for a failure or a handoff.
    @inlinable
    mutating func adoptDetached(_ task: TaskItem<Payload>, sequence: UInt64, readySince: Duration?) -> Work {
        let adopted = adoptRunning(task.targetId)
        let entry = Task(task: task, sequence: sequence, attempts: 1, readySince: readySince)
        return Work(slot: adopted.slot, generation: adopted.generation, entry: entry)
    }

    /// A dispatch the intake started but could not finish inline: a worker runs it.
    @inlinable
    mutating func handOff(_ work: Work, startedAt: Duration?, _ wakeups: inout Wakeups<Payload>) {
        var work = work
        work.immediateTried = true
        work.startedAt = startedAt
        handoff.append(work)
        wakeWorkers(&wakeups)
    }

    /// Whether the intake may pull another task now; if not it parks until space frees up.
    @inlinable
    mutating func intakeMayPull(_ continuation: UnsafeContinuation<Bool, Never>) -> Bool? {
        if phase != .running || intakeStopRequested { return false }
        if buffered < bufferSize { return true }
        intakeWaiter = continuation
        return nil
    }

    @inlinable
    var intakeHasRoom: Bool { phase == .running && !intakeStopRequested && buffered < bufferSize }

    /// Tasks that count against the buffer: queued ones, less those held by parked targets. A
    /// parked target must not stop the intake for every other target; its tasks are reported by
    /// the `parkedTargets` gauge and in the summary.
    @inlinable
    var buffered: Int { queued - parkedQueued }

    @inlinable
    mutating func finishIntake(error: (any Error)?, _ wakeups: inout Wakeups<Payload>) {
        intakeFinished = true
        if let error, !(error is CancellationError) || phase == .running { summary.inputError = error }
        checkFinished(&wakeups)
    }

    // MARK: Completion

    /// Records the end of an attempt. Returns what happened to the task.
    @inlinable
    mutating func complete(
        _ work: Work,
        result: AttemptResult,
        now: Duration?,
        random: Double,
        decided: Verdict?? = nil,
        _ wakeups: inout Wakeups<Payload>
    ) -> AttemptDisposition {
        let i = Int(work.slot)
        precondition(targets[i].generation == work.generation, "completion for a target that was removed")
        running -= 1
        targets[i].running -= 1
        poolFinished(work.entry.task.pool)
        var entry = work.entry
        let disposition: AttemptDisposition
        switch result {
        case .success:
            summary.succeeded += 1
            disposition = .succeeded
        case .failure(let error):
            disposition = fail(
                &entry, slot: work.slot, error: error, now: now, random: random, decided: decided, &wakeups)
        }
        wakeIntakeIfRoom(&wakeups)
        settle(work.slot)
        checkFinished(&wakeups)
        return disposition
    }

    @inlinable
    mutating func wakeIntakeIfRoom(_ wakeups: inout Wakeups<Payload>) {
        if intakeWaiter != nil, buffered < resumeIntakeBelow || phase != .running {
            wakeups.intake = intakeWaiter
            wakeups.intakeValue = phase == .running
            intakeWaiter = nil
        }
    }

    /// The retry policy's decision on a failed attempt: the one place it is made. `nil` while the
    /// run shuts down (the task goes back to the head of its target).
    @inlinable
    func verdict(attempts: Int, error: any Error, random: Double) -> Verdict? {
        if phase != .running { return nil }
        if error is NonRetryableError || attempts >= retry.maxAttempts { return .exhausted }
        if let retryAfter = error as? RetryAfterError { return .retry(after: min(retryAfter.delay, retry.maxDelay)) }
        return .retry(after: retry.delay(beforeRetry: attempts, random: random))
    }

    /// The disposition a failed attempt is about to get (before its target is released), for
    /// ``SchedulerHooks/beforeRelease``.
    @inlinable
    func disposition(of verdict: Verdict?) -> AttemptDisposition {
        switch verdict {
        case nil: .cancelled
        case .retry(let delay): .retrying(after: delay)
        case .exhausted: onExhausted == .park ? .parked : .deadLettered
        }
    }

    @inlinable
    mutating func fail(
        _ entry: inout Task,
        slot: Int32,
        error: any Error,
        now: Duration?,
        random: Double,
        decided: Verdict??,
        _ wakeups: inout Wakeups<Payload>
    ) -> AttemptDisposition {
        let i = Int(slot)
        // A verdict already recorded (beforeRelease) stands, but for a retry that shutdown
        // overtook: that task goes back to the head of its target, as recorded.
        var verdict = decided ?? verdict(attempts: entry.attempts, error: error, random: random)
        if phase != .running, case .retry = verdict { verdict = nil }
        guard let verdict else {
            // Shutdown: the task goes back to the head of its target, with its attempts.
            requeueAtHead(entry, slot: slot)
            return .cancelled
        }
        var delay: Duration?
        if case .retry(let after) = verdict { delay = after }
        if let delay {
            summary.retries += 1
            entry.readySince = now.map { $0 + delay }
            requeueAtHead(entry, slot: slot)
            if targets[i].phase == .parked {
                // An operator parked the target while this attempt ran: the retry waits for the
                // release, which gives the head a fresh set of attempts.
                return .retrying(after: delay)
            }
            unready(slot)
            if delay <= .zero || now == nil {
                targets[i].phase = .idle  // due at once; settle() makes it ready
            } else {
                targets[i].phase = .backoff
                backoffCount += 1
                targets[i].token &+= 1
                addTimer(
                    TimerEntry(
                        deadline: now! + delay, slot: slot, generation: targets[i].generation,
                        token: targets[i].token), &wakeups)
            }
            return .retrying(after: delay)
        }
        summary.failed += 1
        switch onExhausted {
        case .deadLetter:
            summary.deadLettered += 1
            return .deadLettered
        case .park:
            let alreadyParked = targets[i].phase == .parked  // by an operator, during this attempt
            requeueAtHead(entry, slot: slot)
            if !alreadyParked {
                unready(slot)
                targets[i].phase = .parked
                parkedQueued += targets[i].queue.count
            }
            targets[i].parkedByFailure = true
            wakeIntakeIfRoom(&wakeups)
            return .parked
        }
    }

    /// Puts a task back at the head of its target; a parked target counts it among its parked
    /// tasks (which do not hold the intake back).
    @inlinable
    mutating func requeueAtHead(_ entry: Task, slot: Int32) {
        let i = Int(slot)
        targets[i].queue.prepend(entry)
        queued += 1
        if targets[i].phase == .parked { parkedQueued += 1 }
    }

    // MARK: Timers

    @inlinable
    mutating func addTimer(_ entry: TimerEntry, _ wakeups: inout Wakeups<Payload>) {
        timers.insert(entry)
        if let waiter = timerWaiter, timerSleepingUntil.map({ entry.deadline < $0 }) ?? true {
            timerWaiter = nil
            wakeups.timer = waiter
        }
    }

    @usableFromInline
    enum TimerStep: Sendable {
        case sleep(until: Duration)
        case wait
        case exit
    }

    /// Makes due targets ready and says how long the timer task sleeps next.
    @inlinable
    mutating func fireTimers(now: Duration, _ wakeups: inout Wakeups<Payload>) -> TimerStep {
        while let first = timers.min, first.deadline <= now {
            let entry = timers.removeMin()
            let i = Int(entry.slot)
            guard targets[i].generation == entry.generation, targets[i].token == entry.token,
                targets[i].phase == .backoff
            else { continue }
            targets[i].phase = .idle
            backoffCount -= 1
            settle(entry.slot)
        }
        wakeWorkers(&wakeups)
        checkFinished(&wakeups)
        if phase == .finished { return .exit }
        return timers.min.map { .sleep(until: $0.deadline) } ?? .wait
    }

    /// Parks the timer task until a nearer deadline arrives. Returns false to resume at once.
    @inlinable
    mutating func parkTimer(_ continuation: UnsafeContinuation<Void, Never>, until deadline: Duration?) -> Bool {
        if phase == .finished { return false }
        if let deadline, let first = timers.min, first.deadline < deadline { return false }
        if deadline == nil, !timers.isEmpty { return false }
        timerWaiter = continuation
        timerSleepingUntil = deadline
        return true
    }

    @inlinable
    mutating func takeTimerWaiter() -> UnsafeContinuation<Void, Never>? {
        defer { timerWaiter = nil }
        return timerWaiter
    }

    // MARK: Supervisor, shutdown, end

    @inlinable
    mutating func notifySupervisor(
        _ wakeups: inout Wakeups<Payload>, _ change: (inout SupervisorEvents) -> Void
    ) {
        change(&supervisorPending)
        if let waiter = supervisorWaiter {
            supervisorWaiter = nil
            wakeups.supervisor = waiter
            wakeups.supervisorEvents = supervisorPending
            supervisorPending = SupervisorEvents()
        }
    }

    @inlinable
    mutating func nextSupervisorEvents(_ continuation: UnsafeContinuation<SupervisorEvents, Never>) -> SupervisorEvents?
    {
        if !supervisorPending.isEmpty {
            defer { supervisorPending = SupervisorEvents() }
            return supervisorPending
        }
        supervisorWaiter = continuation
        return nil
    }

    @inlinable
    mutating func checkFinished(_ wakeups: inout Wakeups<Payload>) {
        absorbIntakeDebt()
        if phase != .finished, running > 0, intakeFinished || phase == .draining { wantSlots() }
        // Draining ends once nothing runs: a source still blocked in next() is then cancelled.
        guard phase != .finished, running == 0, intakeFinished || phase == .draining else { return }
        // Cheap tests first; the scan for backed-off targets only runs when everything else is idle.
        if phase == .running, readyCount > 0 || !handoff.isEmpty || backoffCount > 0 { return }
        phase = .finished
        for worker in idleWorkers { wakeups.workers.append((worker, nil)) }
        idleWorkers.removeAll()
        if let waiter = takeTimerWaiter() { wakeups.timer = waiter }
        if let waiter = intakeWaiter {
            intakeWaiter = nil
            wakeups.intake = waiter
            wakeups.intakeValue = false
        }
        notifySupervisor(&wakeups) { $0.finished = true }
    }

    /// Starts a graceful shutdown: intake stops, nothing new starts, running tasks get `grace`.
    @inlinable
    mutating func beginShutdown(grace: Duration, _ wakeups: inout Wakeups<Payload>) {
        guard phase == .running else {
            if phase == .draining, grace <= .zero { notifySupervisor(&wakeups) { $0.cancelNow = true } }
            return
        }
        phase = .draining
        intakeStopRequested = true
        if let waiter = intakeWaiter {
            intakeWaiter = nil
            wakeups.intake = waiter
            wakeups.intakeValue = false
        }
        // Handed-off dispatches already started in the executor (it deferred them): a worker
        // still runs them to their end, so they stay in `handoff` and keep their slots.
        if grace <= .zero {
            notifySupervisor(&wakeups) { $0.cancelNow = true }
        } else {
            notifySupervisor(&wakeups) { $0.startGraceTimer = grace }
        }
        checkFinished(&wakeups)
    }

    /// After the supervisor saw `finished`: stops the intake and collects what did not finish.
    @inlinable
    mutating func finalSummary() -> RunSummary<Payload> {
        var result = summary
        for i in targets.indices {
            let parked = targets[i].phase == .parked
            for entry in targets[i].queue.removeAll() {
                let reason: UnfinishedTask<Payload>.Reason = parked ? .parked : .shutdown
                if parked { result.parked += 1 } else { result.cancelled += 1 }
                result.unfinished.append(
                    UnfinishedTask(task: entry.task, sequence: entry.sequence, attempts: entry.attempts, reason: reason)
                )
            }
        }
        result.unfinished.sort { $0.sequence < $1.sequence }
        return result
    }

    // MARK: Operators

    /// Parks a target. One without state is parked ahead: an attempt started without target state
    /// may be running for it, and its later tasks queue, parked, when they arrive.
    mutating func park(_ id: TargetID) -> TargetCommandResult {
        let slot = slot(for: id)
        let i = Int(slot)
        unready(slot)
        if targets[i].phase == .backoff { backoffCount -= 1 }
        if targets[i].phase != .parked { parkedQueued += targets[i].queue.count }
        targets[i].phase = .parked
        targets[i].token &+= 1
        return .done
    }

    mutating func release(_ id: TargetID, _ wakeups: inout Wakeups<Payload>) -> TargetCommandResult {
        guard let slot = index[id] else { return .unknownTarget }
        let i = Int(slot)
        guard targets[i].phase == .parked else { return .notParked }
        parkedQueued -= targets[i].queue.count
        targets[i].queue.modifyFirst { $0.attempts = 0 }
        targets[i].phase = .idle
        if targets[i].parkedByFailure, targets[i].queue.first != nil { summary.failed -= 1 }
        targets[i].parkedByFailure = false
        settle(slot)
        wakeWorkers(&wakeups)
        return .done
    }

    /// Removes every queued task of a parked target; the caller reports them as dead letters.
    mutating func drain(_ id: TargetID, _ wakeups: inout Wakeups<Payload>) -> (TargetCommandResult, [Task]) {
        guard let slot = index[id] else { return (.unknownTarget, []) }
        let i = Int(slot)
        guard targets[i].phase == .parked else { return (.notParked, []) }
        let drained = targets[i].queue.removeAll()
        queued -= drained.count
        parkedQueued -= drained.count
        summary.deadLettered += drained.count
        targets[i].phase = .idle
        targets[i].parkedByFailure = false
        targets[i].token &+= 1
        settle(slot)
        wakeIntakeIfRoom(&wakeups)
        checkFinished(&wakeups)
        return (.done, drained)
    }

    func snapshot(now: Duration?) -> SchedulerSnapshot {
        var s = SchedulerSnapshot()
        s.running = running - max(0, debt.owed.load(ordering: .acquiring) - absorbedDebt)
        s.queued = queued
        s.intakeFinished = intakeFinished
        s.intakeWaitingForRoom = intakeWaiter != nil
        s.shuttingDown = phase != .running
        for (_, slot) in index {
            let target = targets[Int(slot)]
            s.knownTargets += 1
            if target.running > 0 { s.busyTargets += 1 }
            switch target.phase {
            case .ready: s.readyTargets += 1
            case .blocked: s.poolBlockedTargets += 1
            case .backoff: s.backedOffTargets += 1
            case .parked: s.parkedTargets += 1
            case .idle: break
            }
            if let now, target.phase == .ready, let since = target.queue.first?.readySince {
                let age = now - since
                if s.oldestHeadAge.map({ age > $0 }) ?? true { s.oldestHeadAge = age }
            }
        }
        return s
    }
}
