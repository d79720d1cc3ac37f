import Foundation
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostStore
import Testing

@testable import TaskHostRuntime

/// Plugins running under the scheduler: completions inline and from other threads, status
/// mapping, misbehaviour detection, cancellation and abandonment.
@Suite struct PluginExecutorTests {
    func executor(
        _ path: String, config: String = "{}", log: LogRecorder = LogRecorder(), outcomes: OutcomeRecorder,
        abandonAfter: Duration = .seconds(5), events: StateBox<[PluginMisbehaviour]> = StateBox([])
    ) throws -> PluginExecutor {
        let instance = try loader().load(path).makeInstance(
            configuration: config, logger: log.logger, onMisbehaviour: { event in events.mutate { $0.append(event) } })
        return PluginExecutor(instance: instance, abandonAfter: abandonAfter, outcomes: outcomes.callback)
    }

    @Test("Statuses map to the scheduler: error retried, retry-after honoured, permanent not retried")
    func statusMapping() async throws {
        let outcomes = OutcomeRecorder()
        let executor = try executor(try Compiler.fixture("ok_sync"), outcomes: outcomes)
        let deadLetters = StateBox<[String]>([])
        let hooks = SchedulerHooks<String>(attemptFinished: { record in
            if case .deadLettered = record.disposition { deadLetters.mutate { $0.append(record.task.payload) } }
        })
        let clock = TestClock()
        let scheduler = Scheduler(
            executor: executor,
            configuration: SchedulerConfiguration(retry: RetryPolicy(maxAttempts: 2, backoff: .fixed(.seconds(1)))),
            clock: clock, hooks: hooks)
        let tasks = ["hello", "fail", "retry", "permanent"].enumerated().map {
            TaskItem(targetId: .integer(Int64($0)), payload: $1)
        }
        let summary = await withTaskGroup(of: RunSummary<String>.self) { group in
            group.addTask { await scheduler.run(TaskList(tasks)) }
            // Drive the backoff timers: "fail" waits 1 s, "retry" the 1.5 s the plugin asked for.
            while clock.sleepers > 0 || scheduler.snapshot().running > 0 || !scheduler.snapshot().intakeFinished
                || scheduler.snapshot().backedOffTargets > 0
            {
                if let next = clock.nextDeadline { clock.advance(to: next) }
                await Task.yield()
            }
            return await group.next()!
        }
        #expect(summary.succeeded == 1)
        #expect(summary.deadLettered == 3)
        #expect(deadLetters.value.sorted() == ["fail", "permanent", "retry"])
        let attempts = Dictionary(grouping: outcomes.all, by: \.payload).mapValues(\.count)
        #expect(attempts == ["hello": 1, "fail": 2, "retry": 2, "permanent": 1])
        #expect(outcomes.all.first { $0.payload == "hello" }?.outcome.output == "hello")
        #expect(outcomes.all.first { $0.payload == "fail" }?.outcome.message == "asked to fail")
        #expect(outcomes.all.first { $0.payload == "retry" }?.outcome.retryAfterMilliseconds == 1500)
        #expect(clock.now.offset >= .milliseconds(1500))
    }

    @Test("A completion from another thread finishes the task")
    func completionFromAnotherThread() async throws {
        let outcomes = OutcomeRecorder()
        let executor = try executor(try Compiler.fixture("other_thread"), outcomes: outcomes)
        let tasks = (0..<20).map { TaskItem(targetId: .integer(Int64($0 % 4)), payload: "task \($0)") }
        let summary = await run(executor: executor, tasks: TaskList(tasks), maxConcurrency: 8)
        #expect(summary.succeeded == 20)
        #expect(outcomes.all.count == 20)
        #expect(outcomes.all.allSatisfy { $0.outcome.output == "done on another thread" })
    }

    @Test("A double completion is detected and logged; the task still counts once")
    func doubleCompletion() async throws {
        let outcomes = OutcomeRecorder()
        let log = LogRecorder()
        let events = StateBox<[PluginMisbehaviour]>([])
        let executor = try executor(
            try Compiler.fixture("double_complete"), log: log, outcomes: outcomes, events: events)
        let summary = await run(
            executor: executor, tasks: TaskList([TaskItem(targetId: "a", payload: "x")]), maxConcurrency: 1)
        #expect(summary.succeeded + summary.deadLettered == 1)
        #expect(outcomes.all.count == 1)
        // The second completion may land just after the run: wait for the log line.
        for _ in 0..<10_000 where !log.all.contains(where: { $0.contains("completed twice") }) { await Task.yield() }
        #expect(log.all.contains { $0.contains("plugin misbehaviour") && $0.contains("completed twice") })
        // The same event, typed, for the metrics and the conformance check.
        #expect(events.value == [.lateOrDoubleCompletion])
    }

    @Test("A plugin that never completes: the timeout cancels it, then the execution is abandoned")
    func neverCompletes() async throws {
        let outcomes = OutcomeRecorder()
        let log = LogRecorder()
        let events = StateBox<[PluginMisbehaviour]>([])
        let executor = try executor(
            try Compiler.fixture("never_complete"), log: log, outcomes: outcomes, abandonAfter: .zero, events: events)
        let clock = TestClock()
        let scheduler = Scheduler(
            executor: executor, configuration: SchedulerConfiguration(timeout: .seconds(30)), clock: clock)
        let summary = await withTaskGroup(of: RunSummary<String>.self) { group in
            group.addTask { await scheduler.run(TaskList([TaskItem(targetId: "a", payload: "x")])) }
            while clock.sleepers == 0 { await Task.yield() }
            clock.advance(by: .seconds(30))
            return await group.next()!
        }
        #expect(summary.deadLettered == 1)
        for _ in 0..<10_000 where events.value.isEmpty { await Task.yield() }
        #expect(log.all.contains { $0.contains("abandoned") })
        #expect(events.value.map(\.kind) == ["no_completion"])
    }

    @Test("A cancellable pending execution completes with TH_CANCELLED after its timeout")
    func cancellation() async throws {
        let outcomes = OutcomeRecorder()
        let executor = try executor(try Compiler.fixture("never_complete_cancellable"), outcomes: outcomes)
        let clock = TestClock()
        let scheduler = Scheduler(
            executor: executor, configuration: SchedulerConfiguration(timeout: .seconds(5)), clock: clock)
        let summary = await withTaskGroup(of: RunSummary<String>.self) { group in
            group.addTask { await scheduler.run(TaskList([TaskItem(targetId: "a", payload: "x")])) }
            while clock.sleepers == 0 { await Task.yield() }
            clock.advance(by: .seconds(5))
            return await group.next()!
        }
        #expect(summary.deadLettered == 1)
        #expect(outcomes.all.map(\.outcome.status) == [5])  // TH_CANCELLED
    }

    @Test("The conformance check passes a correct plugin and fails one that completes twice")
    func conformance() async throws {
        let good = await PluginConformance.check(try Compiler.fixture("ok_sync"), loader: loader())
        #expect(good.passed, "\(good.text)")
        let bad = await PluginConformance.check(try Compiler.fixture("double_complete"), loader: loader(), tasks: 16)
        #expect(!bad.passed)
        #expect(bad.checks.contains { $0.name == "completion exactly once" && $0.passed == false })
        let cancellable = await PluginConformance.check(
            try Compiler.fixture("never_complete_cancellable"), loader: loader(), tasks: 0)
        #expect(cancellable.checks.contains { $0.name == "cancellation" && $0.passed == true })
    }

    @Test("The Swift SDK plugin: inline results, async results, retryable errors, bad configuration")
    func swiftSDKPlugin() async throws {
        let outcomes = OutcomeRecorder()
        let executor = try executor(
            Paths.plugin("Echo"), config: #"{"prefix": "echo: ", "failOn": "boom"}"#, outcomes: outcomes)
        let summary = await run(
            executor: executor,
            tasks: TaskList([TaskItem(targetId: 1, payload: "hi"), TaskItem(targetId: 2, payload: "boom")]),
            maxConcurrency: 2)
        #expect(summary.succeeded == 1)
        #expect(summary.deadLettered == 1)
        #expect(outcomes.all.first { $0.payload == "hi" }?.outcome.output == "echo: hi")
        #expect(outcomes.all.first { $0.payload == "boom" }?.outcome.status == 3)  // TH_RETRYABLE
        #expect(outcomes.all.first { $0.payload == "boom" }?.outcome.message == "asked to fail on boom")

        // Without a prefix the answer is the payload itself: long (a heap string) and non-ASCII
        // payloads come back byte for byte; quiet mode answers nothing.
        let plain = OutcomeRecorder()
        let long = String(repeating: "payload-", count: 40) + "été ✓"
        let plainSummary = await run(
            executor: try self.executor(Paths.plugin("Echo"), config: "{}", outcomes: plain),
            tasks: TaskList([TaskItem(targetId: "a", payload: long), TaskItem(targetId: 7, payload: "ß")]),
            maxConcurrency: 2)
        #expect(plainSummary.succeeded == 2)
        #expect(Set(plain.all.compactMap(\.outcome.output)) == [long, "ß"])
        let quiet = OutcomeRecorder()
        _ = await run(
            executor: try self.executor(Paths.plugin("Echo"), config: #"{"quiet": true}"#, outcomes: quiet),
            tasks: TaskList([TaskItem(targetId: 1, payload: "hi")]), maxConcurrency: 1)
        #expect(quiet.all.count == 1 && quiet.all.allSatisfy { $0.outcome.output == nil && $0.outcome.status == 0 })

        let delayed = OutcomeRecorder()
        let async = try self.executor(Paths.plugin("Echo"), config: #"{"delayMs": 1}"#, outcomes: delayed)
        let asyncSummary = await run(
            executor: async,
            tasks: TaskList((0..<10).map { TaskItem(targetId: .integer(Int64($0)), payload: "\($0)") }),
            maxConcurrency: 4)
        #expect(asyncSummary.succeeded == 10)
        #expect(Set(delayed.all.compactMap(\.outcome.output)) == Set((0..<10).map { "\($0)" }))
    }

    @Test(
        "A borrowed task cannot outlive executeImmediately: the compiler refuses to keep it or capture it",
        arguments: [
            ("let kept = task; _ = kept", "'task' is borrowed and cannot be consumed"),
            ("Task { _ = task.payload }", "'task' cannot be captured by an escaping closure"),
            ("let kept = task.owned(); Task { _ = kept.payload }", nil),
        ])
    func borrowedTaskStaysBorrowed(body: String, refusal: String?) throws {
        let source = Paths.scratch() + "/Leaky.swift"
        try """
        import TaskHostPluginSDK
        struct Leaky: TaskHostPlugin {
            struct Configuration: Decodable, Sendable {}
            static let name = "leaky"
            static let version = "0"
            init(configuration: Configuration, host: PluginHost) throws {}
            func executeImmediately(_ task: borrowing BorrowedTask) throws -> ImmediateResult {
                \(body)
                return .deferred
            }
            func execute(_ task: PluginTask) async throws -> String? { nil }
        }
        """.write(toFile: source, atomically: true, encoding: .utf8)
        // SIL is where the compiler checks ownership: -typecheck alone would accept all three.
        let result = try Compiler.run(
            "/usr/bin/env",
            [
                "swiftc", "-emit-sil", "-o", "/dev/null", "-I", Paths.builtPlugins + "/Modules", "-Xcc",
                "-fmodule-map-file=" + Paths.builtPlugins + "/CTaskHostPlugin.build/module.modulemap", source,
            ])
        if let refusal {
            #expect(result.status != 0)
            #expect(result.output.contains(refusal), "\(result.output)")
        } else {
            #expect(result.status == 0, "\(result.output)")
        }
    }

    @Test("The Swift SDK hands each field over: the borrowed view inline, its owned copy when async")
    func swiftSDKFields() async throws {
        struct Described: Decodable, Equatable {
            var targetId: String
            var targetInteger: Int64?
            var id: String?
            var sequence: UInt64
            var attempt: Int
            var payload: String
            var async: Bool
        }
        func described(_ recorder: OutcomeRecorder) throws -> Described? {
            guard let output = recorder.all.last?.outcome.output else { return nil }
            return try JSONDecoder().decode(Described.self, from: Data(output.utf8))
        }
        let inline = OutcomeRecorder()
        let sync = try executor(Paths.plugin("Echo"), config: #"{"describe": true}"#, outcomes: inline)
        let cases: [(TaskItem<String>, ExecutionContext)] = [
            (
                TaskItem(targetId: "db/été", payload: "{\"n\": 1} ✓", id: "job-7"),
                ExecutionContext(sequence: 41, attempt: 3)
            ),
            (TaskItem(targetId: -12, payload: ""), ExecutionContext(sequence: 1 << 40, attempt: 1)),
            (TaskItem(targetId: "7", payload: "x"), ExecutionContext(sequence: 0, attempt: 2)),
        ]
        let expected = [
            Described(
                targetId: "db/été", targetInteger: nil, id: "job-7", sequence: 41, attempt: 3, payload: "{\"n\": 1} ✓",
                async: false),
            Described(
                targetId: "-12", targetInteger: -12, id: nil, sequence: 1 << 40, attempt: 1, payload: "", async: false),
            // The string "7" is not the integer 7: no integer is handed over.
            Described(targetId: "7", targetInteger: nil, id: nil, sequence: 0, attempt: 2, payload: "x", async: false),
        ]
        for ((task, context), want) in zip(cases, expected) {
            guard case .succeeded = sync.executeImmediately(task, context: context) else {
                Issue.record("the inline execution did not succeed")
                continue
            }
            #expect(try described(inline) == want)
        }

        // With a delay the SDK copies the view (owned()) before it suspends; the fields survive.
        let delayed = OutcomeRecorder()
        let async = try executor(Paths.plugin("Echo"), config: #"{"describe": true, "delayMs": 1}"#, outcomes: delayed)
        for ((task, context), want) in zip(cases, expected) {
            try await async.execute(task, context: context)
            var copied = want
            copied.async = true
            #expect(try described(delayed) == copied)
        }
    }
}

/// A value under a lock, for test bookkeeping.
final class StateBox<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value { lock.withLock { stored } }
    func mutate(_ body: (inout Value) -> Void) { lock.withLock { body(&stored) } }
}

/// A manual clock for these tests.
final class TestClock: Clock, @unchecked Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private let lock = NSLock()
    private var current = Instant(offset: .zero)
    private var waiting: [(id: Int, deadline: Instant, continuation: CheckedContinuation<Void, any Error>)] = []
    private var nextID = 0

    var now: Instant { lock.withLock { current } }
    var minimumResolution: Duration { .nanoseconds(1) }
    var sleepers: Int { lock.withLock { waiting.count } }
    var nextDeadline: Instant? { lock.withLock { waiting.map(\.deadline).min() } }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let id = lock.withLock {
            nextID += 1
            return nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let ready: Result<Void, any Error>? = lock.withLock {
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if deadline <= current { return .success(()) }
                    waiting.append((id, deadline, continuation))
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let cancelled = lock.withLock { () -> CheckedContinuation<Void, any Error>? in
                guard let index = waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return waiting.remove(at: index).continuation
            }
            cancelled?.resume(throwing: CancellationError())
        }
    }

    func advance(by duration: Duration) { advance(to: now.advanced(by: duration)) }

    func advance(to instant: Instant) {
        let due = lock.withLock { () -> [CheckedContinuation<Void, any Error>] in
            if instant > current { current = instant }
            let due = waiting.filter { $0.deadline <= current }
            waiting.removeAll { $0.deadline <= current }
            return due.map(\.continuation)
        }
        for continuation in due { continuation.resume() }
    }
}
