import Foundation
import Logging
import TaskHostPlugins
import TaskHostRuntime
import TaskHostScheduler

/// Wraps an executor of string payloads with the scenario's invariant bookkeeping; the task's
/// index is its payload.
struct CheckedExecutor<Inner: TaskItemExecutor>: TaskItemExecutor where Inner.Payload == String {
    let inner: Inner
    let invariants: Invariants

    var supportsImmediateExecution: Bool { inner.supportsImmediateExecution }

    func executeImmediately(_ task: TaskItem<String>, context: ExecutionContext) -> ImmediateOutcome {
        guard case .integer(let t) = task.targetId else { return .failed(CancellationError()) }
        let index = decimalIndex(task.payload)
        invariants.enter(target: Int(t), index: index)
        let outcome = inner.executeImmediately(task, context: context)
        if case .deferred = outcome { return outcome }
        invariants.leave(target: Int(t), index: index)
        return outcome
    }

    func execute(_ task: TaskItem<String>, context: ExecutionContext) async throws {
        guard case .integer(let t) = task.targetId else { return }
        let index = decimalIndex(task.payload)
        defer { invariants.leave(target: Int(t), index: index) }
        try await inner.execute(task, context: context)
    }
}

extension TaskHostBench {
    /// P0/P5: S1 and S2 in-process with the same string payloads and wrapper (the baseline);
    /// P1/P2: S1 and S2 through the C no-op plugin; P3/P4 through the Swift SDK plugin (Echo);
    /// P6: S1 through the C Noop plugin in echo mode (the same work as Echo); P7/P8: S1 and S2
    /// through Echo in quiet mode (reads and answers nothing, as Noop: the SDK's own cost, against
    /// P1 and P2);
    /// F1: S1's tasks through a libffi call of a plain C function.
    func pluginScenario(_ key: String) async -> Bool {
        let base = [
            "P0": "S1", "P5": "S2", "P1": "S1", "P2": "S2", "P3": "S1", "P4": "S2", "P6": "S1", "P7": "S1", "P8": "S2",
            "F1": "S1",
        ][
            key]!
        guard let spec = Scenario.make(base, tasks: tasks) else { return false }
        let items = spec.targets.enumerated().map { TaskItem(targetId: .integer(Int64($1)), payload: String($0)) }
        let invariants = Invariants(targetCount: spec.targetCount, maxThreads: spec.maxThreads)
        let loader = PluginLoader(searchPath: PluginLoader.searchPath(environment: ProcessInfo.processInfo.environment))
        let logger = Logger(label: "taskhost-bench") { _ in SwiftLogNoOpLogHandler() }
        let label: String
        let clock = ContinuousClock()
        let start: ContinuousClock.Instant
        let summary: RunSummary<String>
        do {
            switch key {
            case "P0", "P5":
                // The in-process baseline of the plugin scenarios: same payloads, same wrapper.
                label = "\(peer) (in-process, string payload)"
                let executor = CheckedExecutor(inner: SynchronousExecutor<String> { _, _ in }, invariants: invariants)
                start = clock.now
                summary = await TaskHostScheduler.run(
                    executor: executor, tasks: ArrayTaskSequence(tasks: items), maxConcurrency: spec.maxThreads)
            case "P1", "P2", "P3", "P4", "P6", "P7", "P8":
                // P6: the C Noop plugin in echo mode, the same work as the Swift SDK's Echo (P3).
                let name = ["P1": "Noop", "P2": "Noop", "P6": "Noop"][key] ?? "Echo"
                let plugin = try loader.load(name)
                let configuration =
                    ["P6": #"{"echo": true}"#, "P7": #"{"quiet": true}"#, "P8": #"{"quiet": true}"#][key] ?? "{}"
                let instance = try plugin.makeInstance(configuration: configuration, logger: logger)
                label =
                    "\(peer) (\(plugin.name) plugin\(["P6": ", echo", "P7": ", quiet", "P8": ", quiet"][key] ?? ""))"
                let executor = CheckedExecutor(inner: PluginExecutor(instance: instance), invariants: invariants)
                start = clock.now
                summary = await TaskHostScheduler.run(
                    executor: executor, tasks: ArrayTaskSequence(tasks: items), maxConcurrency: spec.maxThreads)
            default:
                // The payload is the index: double(double) of pricing_apply_discount is called with it.
                let function = try FFIFunctionExecutor(
                    library: try loader.resolve("pricing"), symbol: "pricing_apply_discount",
                    signature: "double(double, float)", arguments: ["$.data", "$.data"])
                label = "\(peer) (libffi)"
                let executor = CheckedExecutor(inner: function, invariants: invariants)
                start = clock.now
                summary = await TaskHostScheduler.run(
                    executor: executor, tasks: ArrayTaskSequence(tasks: items), maxConcurrency: spec.maxThreads)
            }
        } catch {
            FileHandle.standardError.write(Data("\(key): \(error)\n".utf8))
            return false
        }
        let seconds = (clock.now - start).secondsDouble
        invariants.finish(expected: items.count)
        if summary.succeeded != items.count { invariants.violate("summary counts \(summary.succeeded) succeeded") }
        let ok = invariants.violations.load(ordering: .relaxed) == 0
        var fields: [(String, String)] = [
            ("peer", json(label)), ("scenario", json(spec.name)), ("tasks", "\(items.count)"),
            ("seconds", fixed(seconds, 4)), ("tasks_per_s", "\(Int((Double(items.count) / seconds).rounded()))"),
            ("ns_per_task", fixed(seconds * 1e9 / Double(items.count), 1)),
            ("max_threads", spec.maxThreads.map(String.init) ?? "null"),
            ("max_running_observed", "\(invariants.maxRunning.load(ordering: .relaxed))"),
            ("ok", ok ? "true" : "false"),
        ]
        if let first = invariants.firstViolation.withLock({ $0 }) { fields.append(("first_violation", json(first))) }
        emit(fields)
        return ok
    }
}
