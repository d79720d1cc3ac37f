import ArgumentParser
import Foundation
import Synchronization
import TaskHostPlugins
import TaskHostScheduler

@main
struct TaskHostBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "taskhost-bench",
        abstract: "Runs the scenarios of SCENARIOS.md and TaskHost's own measurements; one JSON line each.",
        discussion: """
            Scenarios: S1 S2 S3 S4 V1 (SCENARIOS.md, same generators and invariant checks as the peers),
            K1 (keyed vs unkeyed: the S1 tasks with 1,000 targets, then the same tasks with all targets
            distinct), L1 (start latency of a cold target behind a hot target with 100,000 queued tasks),
            M1 (peak memory running 1,000,000 tasks from a lazy sequence), M2 (peak memory holding
            1,000,000 queued tasks), I1 (CPU used while waiting for input), P0/P5 (S1/S2 in-process with string payloads: the \
            baseline of the plugin scenarios), P1/P2 (S1/S2 through the C \
            no-op plugin, loaded with dlopen), P3/P4 (S1/S2 through the Swift SDK plugin Echo), P6 (S1 through the C \
            Noop plugin in echo mode: the same work as Echo), P7/P8 (S1/S2 through Echo in quiet mode, \
            which does nothing, as Noop: the SDK's own cost, against P1/P2), F1 (S1's \
            tasks as libffi calls of a plain C function), X1 (the invariant checker itself: each kind of \
            violation, fed to it on purpose, must be caught). Run memory scenarios in a process of their own: \
            peak RSS is per process.
            """)

    @Option(help: "Comma-separated scenario keys, or 'all' for S1,S2,S3,S4,V1.")
    var scenario = "all"

    @Option(help: "Override the task count of the chosen scenarios.")
    var tasks: Int?

    @Option(help: "Executor for the no-op scenarios: sync (offers the inline fast path), async, or both.")
    var mode = "both"

    @Option(help: "Name reported in the 'peer' field.")
    var peer = "taskhost"

    func run() async throws {
        let keys = scenario == "all" ? Scenario.keys : scenario.split(separator: ",").map(String.init)
        var allOK = true
        for key in keys {
            switch key {
            case "K1": allOK = await keyedOverhead() && allOK
            case "L1": allOK = await coldStartLatency() && allOK
            case "M1": allOK = await memoryLazy() && allOK
            case "M2": allOK = await memoryQueued() && allOK
            case "I1": allOK = await idleCPU() && allOK
            case "X1": allOK = checkerSelfTest() && allOK
            case "P0", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "F1": allOK = await pluginScenario(key) && allOK
            default:
                guard let spec = Scenario.make(key, tasks: tasks) else {
                    throw ValidationError(
                        "unknown scenario \(key); use S1 S2 S3 S4 V1 K1 L1 M1 M2 I1 P0 P1 P2 P3 P4 P5 P6 P7 P8 F1 X1")
                }
                let modes = spec.kind == .noop ? (mode == "both" ? ["sync", "async"] : [mode]) : ["async"]
                for m in modes {
                    allOK = await runScenario(spec, synchronous: m == "sync", label: "\(peer) (\(m))") && allOK
                }
            }
        }
        if !allOK { throw ExitCode(1) }
    }

    func runScenario(_ spec: Scenario, synchronous: Bool, label: String, name: String? = nil) async -> Bool {
        let items = spec.targets.enumerated().map { TaskItem(targetId: .integer(Int64($1)), payload: $0) }
        let invariants = Invariants(targetCount: spec.targetCount, maxThreads: spec.maxThreads)
        let executor = ScenarioExecutor(
            invariants: invariants, kind: spec.kind, durations: spec.durations, yields: spec.yields,
            synchronous: synchronous)
        let sequence = ArrayTaskSequence(tasks: items)
        let clock = ContinuousClock()
        let start = clock.now
        let summary = await TaskHostScheduler.run(executor: executor, tasks: sequence, maxConcurrency: spec.maxThreads)
        let seconds = (clock.now - start).secondsDouble
        invariants.finish(expected: items.count)
        if summary.succeeded != items.count { invariants.violate("summary counts \(summary.succeeded) succeeded") }
        let makespan = seconds * 1000
        let ideal = spec.idealMilliseconds
        var fields: [(String, String)] = [
            ("peer", json(label)), ("scenario", json(name ?? spec.name)), ("tasks", "\(items.count)"),
            ("seconds", fixed(seconds, 4)), ("tasks_per_s", "\(Int((Double(items.count) / seconds).rounded()))"),
            ("makespan_ms", fixed(makespan, 1)), ("ideal_ms", ideal.map { fixed($0, 1) } ?? "null"),
            ("efficiency", ideal.map { fixed($0 / makespan, 4) } ?? "null"),
            ("max_threads", spec.maxThreads.map(String.init) ?? "null"),
            ("max_running_observed", "\(invariants.maxRunning.load(ordering: .relaxed))"),
            ("ok", invariants.violations.load(ordering: .relaxed) == 0 ? "true" : "false"),
        ]
        if spec.kind == .sleep, let threads = spec.maxThreads {
            // What the timer added to each sleep, and the efficiency against the time actually slept:
            // the share of the shortfall that is the scheduler's.
            let slept = Double(invariants.slept.load(ordering: .relaxed)) / 1e6
            let nominal = spec.durations.reduce(0.0) { $0 + Double($1) }
            fields.append(("sleep_overshoot_us", fixed((slept - nominal) * 1000 / Double(items.count), 1)))
            fields.append(("efficiency_actual_sleep", fixed(slept / Double(threads) / makespan, 4)))
        }
        if let first = invariants.firstViolation.withLock({ $0 }) {
            fields.append(("violations", "\(invariants.violations.load(ordering: .relaxed))"))
            fields.append(("first_violation", json(first)))
        }
        emit(fields)
        return invariants.violations.load(ordering: .relaxed) == 0
    }

    /// K1: the S1 tasks with 1,000 targets, then the same tasks with every target distinct.
    func keyedOverhead() async -> Bool {
        guard var keyed = Scenario.make("S1", tasks: tasks) else { return false }
        var unkeyed = keyed
        unkeyed.targets = (0..<keyed.targets.count).map { Int32($0) }
        unkeyed.targetCount = keyed.targets.count
        keyed.name = "K1-keyed"
        unkeyed.name = "K1-unkeyed"
        var ok = true
        for m in mode == "both" ? ["sync", "async"] : [mode] {
            ok = await runScenario(keyed, synchronous: m == "sync", label: "\(peer) (\(m))") && ok
            ok = await runScenario(unkeyed, synchronous: m == "sync", label: "\(peer) (\(m))") && ok
        }
        return ok
    }

    /// L1: a hot target holds 100,000 queued tasks behind a blocked head; a cold task arrives.
    func coldStartLatency() async -> Bool {
        let hotCount = tasks ?? 100_000
        let clock = ContinuousClock()
        let gate = Gate()
        let coldArrived = Mutex<ContinuousClock.Instant?>(nil)
        let coldStarted = Mutex<ContinuousClock.Instant?>(nil)
        let executor = ClosureExecutor<Int> { task, _ in
            if task.targetId == "cold" {
                coldStarted.withLock { $0 = clock.now }
                await gate.open()
            } else {
                await gate.wait()
            }
        }
        // The cold task's arrival is stamped when the scheduler pulls it, behind the hot backlog.
        let source = StampedSequence(hotCount: hotCount) { coldArrived.withLock { $0 = clock.now } }
        let configuration = SchedulerConfiguration(maxConcurrency: 8, bufferSize: hotCount + 10)
        let scheduler = Scheduler(executor: executor, configuration: configuration)
        let summary = await scheduler.run(source)
        guard let arrived = coldArrived.withLock({ $0 }), let started = coldStarted.withLock({ $0 }) else {
            return false
        }
        let latency = arrived.duration(to: started)
        let ok = summary.succeeded == hotCount + 1
        emit([
            ("peer", json(peer)), ("scenario", json("L1-cold-start")), ("hot_queued", "\(hotCount)"),
            ("cold_start_latency_us", fixed(latency.secondsDouble * 1e6, 1)), ("ok", ok ? "true" : "false"),
        ])
        return ok
    }

    /// M1: 1,000,000 tasks from a lazy sequence (never materialized), 1,000 targets, cap 64.
    func memoryLazy() async -> Bool {
        let n = tasks ?? 1_000_000
        let before = peakResidentKB()
        let sequence = LazyTaskSequence(count: n, targets: 1000)
        let executor = ClosureExecutor<Int> { _, _ in await Task.yield() }
        let summary = await TaskHostScheduler.run(executor: executor, tasks: sequence, maxConcurrency: 64)
        let after = peakResidentKB()
        emit([
            ("peer", json(peer)), ("scenario", json("M1-lazy-memory")), ("tasks", "\(n)"),
            ("peak_rss_mb", fixed(Double(after) / 1024, 1)), ("rss_before_mb", fixed(Double(before) / 1024, 1)),
            ("ok", summary.succeeded == n ? "true" : "false"),
        ])
        return summary.succeeded == n
    }

    /// M2: 1,000,000 tasks queued at once behind blocked targets (a buffer big enough for all).
    func memoryQueued() async -> Bool {
        let n = tasks ?? 1_000_000
        let gate = Gate()
        let queuedAll = Mutex<Int?>(nil)
        let before = peakResidentKB()
        let executor = ClosureExecutor<Int> { task, _ in
            if task.payload < 64 { await gate.wait() }
        }
        let sequence = LazyTaskSequence(count: n, targets: 1000)
        let scheduler = Scheduler(
            executor: executor, configuration: SchedulerConfiguration(maxConcurrency: 64, bufferSize: n))
        async let summary = scheduler.run(sequence)
        while scheduler.snapshot().queued + scheduler.snapshot().running < n {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let peak = peakResidentKB()
        queuedAll.withLock { $0 = scheduler.snapshot().queued }
        await gate.open()
        let result = await summary
        let perTask = Double(peak - before) * 1024 / Double(n)
        emit([
            ("peer", json(peer)), ("scenario", json("M2-queued-memory")), ("tasks", "\(n)"),
            ("queued_at_peak", "\(queuedAll.withLock { $0 } ?? 0)"),
            ("peak_rss_mb", fixed(Double(peak) / 1024, 1)), ("bytes_per_queued_task", fixed(perTask, 0)),
            ("ok", result.succeeded == n ? "true" : "false"),
        ])
        return result.succeeded == n
    }

    /// I1: a run waiting one second for input must use no CPU (no polling loop).
    func idleCPU() async -> Bool {
        let (stream, continuation) = AsyncStream<TaskItem<Int>>.makeStream()
        let executor = ClosureExecutor<Int> { _, _ in }
        let scheduler = Scheduler(
            executor: executor,
            configuration: SchedulerConfiguration(
                maxConcurrency: 4, retry: RetryPolicy(maxAttempts: 2, backoff: .fixed(.seconds(3600)))))
        async let summary = scheduler.run(stream)
        continuation.yield(TaskItem(targetId: 1, payload: 0))
        try? await Task.sleep(for: .milliseconds(100))
        let cpuBefore = processCPUSeconds()
        try? await Task.sleep(for: .seconds(1))
        let cpu = processCPUSeconds() - cpuBefore
        continuation.finish()
        let result = await summary
        let ok = result.succeeded == 1 && cpu < 0.02
        emit([
            ("peer", json(peer)), ("scenario", json("I1-idle-cpu")), ("idle_seconds", "1"),
            ("cpu_ms", fixed(cpu * 1000, 2)), ("ok", ok ? "true" : "false"),
        ])
        return ok
    }
}

/// `hotCount` tasks of target "hot", then one of target "cold"; `onCold` runs as it is pulled.
struct StampedSequence: AsyncSequence, Sendable {
    typealias Element = TaskItem<Int>
    let hotCount: Int
    let onCold: @Sendable () -> Void

    struct AsyncIterator: AsyncIteratorProtocol {
        let hotCount: Int
        let onCold: @Sendable () -> Void
        var index = 0
        mutating func next() async -> TaskItem<Int>? {
            defer { index += 1 }
            if index < hotCount { return TaskItem(targetId: "hot", payload: index) }
            guard index == hotCount else { return nil }
            onCold()
            return TaskItem(targetId: "cold", payload: index)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(hotCount: hotCount, onCold: onCold) }
}

/// A one-shot barrier for the latency and memory scenarios.
actor Gate {
    private var isOpen = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func wait() async {
        if isOpen { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func open() {
        isOpen = true
        for waiter in waiters { waiter.resume() }
        waiters.removeAll()
    }
}

func peakResidentKB() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
    }
    return 0
}

func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
        + Double(usage.ru_stime.tv_usec) / 1e6
}

func json(_ string: String) -> String {
    var out = "\""
    for scalar in string.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

func fixed(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }

func emit(_ fields: [(String, String)]) {
    print("{" + fields.map { "\(json($0.0)):\($0.1)" }.joined(separator: ",") + "}")
    fflush(nil)
}

extension Duration {
    var secondsDouble: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

extension TaskHostBench {
    /// X1: the invariant checker catches each violation it exists for, and passes a clean run.
    func checkerSelfTest() -> Bool {
        var results: [(String, Bool)] = []
        func expect(_ name: String, violation expected: Bool, maxThreads: Int? = 2, _ body: (Invariants) -> Void) {
            let invariants = Invariants(targetCount: 4, maxThreads: maxThreads)
            body(invariants)
            results.append((name, (invariants.violations.load(ordering: .relaxed) > 0) == expected))
        }
        expect("clean", violation: false) { i in
            i.enter(target: 0, index: 0)
            i.enter(target: 1, index: 1)
            i.leave(target: 0, index: 0)
            i.leave(target: 1, index: 1)
            i.enter(target: 0, index: 2)
            i.leave(target: 0, index: 2)
            i.finish(expected: 3)
        }
        expect("overlap", violation: true) { i in
            i.enter(target: 0, index: 0)
            i.enter(target: 0, index: 1)
        }
        expect("fifo", violation: true) { i in
            i.enter(target: 0, index: 5)
            i.leave(target: 0, index: 5)
            i.enter(target: 0, index: 3)
        }
        expect("rerun", violation: true) { i in
            i.enter(target: 0, index: 0)
            i.leave(target: 0, index: 0)
            i.enter(target: 0, index: 0)
        }
        expect("cap", violation: true) { i in
            for t in 0..<3 { i.enter(target: t, index: t) }
        }
        expect("lost", violation: true) { i in
            i.enter(target: 0, index: 0)
            i.leave(target: 0, index: 0)
            i.finish(expected: 2)
        }
        expect("unfinished", violation: true, maxThreads: nil) { i in
            i.enter(target: 0, index: 0)
            i.enter(target: 1, index: 1)
            i.leave(target: 1, index: 1)
            i.finish(expected: 1)
        }
        let failed = results.filter { !$0.1 }.map(\.0)
        let ok = failed.isEmpty
        print(
            #"{"peer":"\#(peer)","scenario":"X1-checker","cases":\#(results.count),"failed":[\#(failed.map { "\"\($0)\"" }.joined(separator: ","))],"ok":\#(ok)}"#
        )
        return ok
    }
}
