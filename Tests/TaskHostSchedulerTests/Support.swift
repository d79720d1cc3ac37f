import Synchronization
import Testing

@testable import TaskHostScheduler

/// A clock that moves only when a test advances it. Sleepers resume, in deadline order, when
/// the clock reaches their deadline; a cancelled sleeper throws `CancellationError`.
final class ManualClock: Clock, @unchecked Sendable {
    struct Instant: InstantProtocol, Hashable {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private struct Sleeper {
        var id: UInt64
        var deadline: Instant
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleepers: [Sleeper] = []
        var nextID: UInt64 = 0
    }

    private let state = StateLock(State())

    var now: Instant { state.withLock { $0.now } }
    var minimumResolution: Duration { .nanoseconds(1) }

    var sleeperCount: Int { state.withLock { $0.sleepers.count } }
    var nextDeadline: Instant? { state.withLock { $0.sleepers.map(\.deadline).min() } }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow: Result<Void, any Error>? = state.withLock { state in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if deadline <= state.now { return .success(()) }
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    return nil
                }
                if let resumeNow { continuation.resume(with: resumeNow) }
            }
        } onCancel: {
            let sleeper = state.withLock { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    func advance(by duration: Duration) { advance(to: now.advanced(by: duration)) }

    func advance(to instant: Instant) {
        let due = state.withLock { state -> [Sleeper] in
            if instant > state.now { state.now = instant }
            let due = state.sleepers.filter { $0.deadline <= state.now }.sorted { $0.deadline < $1.deadline }
            state.sleepers.removeAll { $0.deadline <= state.now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }
}

/// Waits until `condition` holds, yielding to the scheduler's tasks; records a failure if it
/// does not hold within `limit` of wall time. It only waits for background progress: scheduler
/// time is the ManualClock's, which this never moves, and no assertion depends on elapsed time.
func eventually(
    _ what: @autoclosure () -> String = "condition",
    limit: Duration = .seconds(60),
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) async {
    let deadline = ContinuousClock.now.advanced(by: limit)
    while ContinuousClock.now < deadline {
        for _ in 0..<100 {
            if condition() { return }
            await Task.yield()
        }
    }
    if condition() { return }
    Issue.record("never became true: \(what())", sourceLocation: sourceLocation)
}

/// A task sequence from an array.
struct ListSource<Payload: Sendable>: AsyncSequence, Sendable {
    let items: [TaskItem<Payload>]
    init(_ items: [TaskItem<Payload>]) { self.items = items }
    struct AsyncIterator: AsyncIteratorProtocol {
        var base: IndexingIterator<[TaskItem<Payload>]>
        mutating func next() async -> TaskItem<Payload>? { base.next() }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: items.makeIterator()) }
}

func tasks(_ targets: [TargetID]) -> [TaskItem<Int>] {
    targets.enumerated().map { TaskItem(targetId: $1, payload: $0) }
}

/// An executor whose executions wait until the test opens their gate, recording what ran.
final class GatedExecutor: TaskItemExecutor, @unchecked Sendable {
    struct Event: Equatable {
        enum Kind: Equatable { case start, end }
        var kind: Kind
        var payload: Int
        var target: TargetID
        var attempt: Int
    }

    private struct State {
        var events: [Event] = []
        var waiting: [Int: CheckedContinuation<Bool, Never>] = [:]
        var openGates: [Int: Bool] = [:]
        var running = 0
        var runningByTarget: [TargetID: Int] = [:]
        var violations: [String] = []
    }

    private let state = StateLock(State())
    let ignoresCancellation: Bool

    init(ignoresCancellation: Bool = false) { self.ignoresCancellation = ignoresCancellation }

    var events: [Event] { state.withLock { $0.events } }
    var running: Int { state.withLock { $0.running } }
    var violations: [String] { state.withLock { $0.violations } }
    var started: [Int] { events.filter { $0.kind == .start }.map(\.payload) }
    func isWaiting(_ payload: Int) -> Bool { state.withLock { $0.waiting[payload] != nil } }
    var waitingCount: Int { state.withLock { $0.waiting.count } }

    /// Lets the execution of `payload` finish: true succeeds, false fails.
    func open(_ payload: Int, succeed: Bool = true) {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            if let waiter = state.waiting.removeValue(forKey: payload) { return waiter }
            state.openGates[payload] = succeed
            return nil
        }
        waiter?.resume(returning: succeed)
    }

    func execute(_ task: TaskItem<Int>, context: ExecutionContext) async throws {
        state.withLock { state in
            state.events.append(
                Event(kind: .start, payload: task.payload, target: task.targetId, attempt: context.attempt))
            state.running += 1
            state.runningByTarget[task.targetId, default: 0] += 1
            if state.runningByTarget[task.targetId]! > 1 {
                state.violations.append("target \(task.targetId) overlapped")
            }
        }
        let succeed = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let now = state.withLock { state -> Bool? in
                if let preset = state.openGates.removeValue(forKey: task.payload) { return preset }
                state.waiting[task.payload] = continuation
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
        state.withLock { state in
            state.events.append(
                Event(kind: .end, payload: task.payload, target: task.targetId, attempt: context.attempt))
            state.running -= 1
            state.runningByTarget[task.targetId, default: 0] -= 1
        }
        if !ignoresCancellation { try Task.checkCancellation() }
        if !succeed { throw TestFailure.failed(task.payload) }
    }
}

enum TestFailure: Error, Equatable { case failed(Int) }

/// Runs a scheduler in a child task so the test can drive it.
final class RunHandle<Payload: Sendable>: Sendable {
    let finished = Atomic<Bool>(false)
    let result = StateLock<RunSummary<Payload>?>(nil)
    var summary: RunSummary<Payload>? { result.withLock { $0 } }
    var isFinished: Bool { finished.load(ordering: .acquiring) }
}

func start<E: TaskItemExecutor, C: Clock, S: AsyncSequence & Sendable>(
    _ scheduler: Scheduler<E, C>, _ source: S, in group: inout TaskGroup<Void>
) -> RunHandle<E.Payload> where S.Element == TaskItem<E.Payload> {
    let handle = RunHandle<E.Payload>()
    group.addTask {
        let summary = await scheduler.run(source)
        handle.result.withLock { $0 = summary }
        handle.finished.store(true, ordering: .releasing)
    }
    return handle
}
