import CTaskHostPlugin
import Logging
import Synchronization
import TaskHostJSON
import TaskHostScheduler

/// The result of `taskhost plugin check`: one line per check.
package struct ConformanceReport: Sendable {
    package struct Check: Sendable {
        package var name: String
        /// nil: skipped (not applicable).
        package var passed: Bool?
        package var detail: String
    }

    package var plugin: String
    package var checks: [Check] = []
    package var passed: Bool { !checks.contains { $0.passed == false } }
    /// Called with each check as it is recorded (a report that survives a plugin that crashes).
    package var progress: (@Sendable (Check) -> Void)?

    package mutating func record(_ name: String, _ passed: Bool?, _ detail: String) {
        let check = Check(name: name, passed: passed, detail: detail)
        checks.append(check)
        progress?(check)
    }

    package static func line(_ check: Check) -> String {
        "  \(check.passed.map { $0 ? "PASS" : "FAIL" } ?? "SKIP")  \(check.name): \(check.detail)"
    }

    package var result: String {
        let failed = checks.filter { $0.passed == false }.count
        return failed == 0 ? "result: conforming" : "result: \(failed) check\(failed == 1 ? "" : "s") failed"
    }

    package var text: String {
        (["plugin check: \(plugin)"] + checks.map(Self.line) + [result]).joined(separator: "\n")
    }
}

/// Keeps the misbehaviour events of the instances a check makes.
package final class MisbehaviourRecorder: Sendable {
    package let events = Mutex<[PluginMisbehaviour]>([])
    package func record(_ event: PluginMisbehaviour) { events.withLock { $0.append(event) } }
}

/// Exercises a plugin the way the host will: versions, bad and good configuration, concurrent
/// tasks on distinct targets, completion exactly once, cancellation, error mapping.
package enum PluginConformance {
    package static func check(
        _ reference: String, loader: PluginLoader, configuration: String = "{}", payload: String = "{}",
        tasks: Int = 128, targets: Int = 32, progress: (@Sendable (ConformanceReport.Check) -> Void)? = nil
    ) async -> ConformanceReport {
        var report = ConformanceReport(plugin: reference, progress: progress)
        let plugin: LoadedPlugin
        do {
            plugin = try loader.load(reference)
        } catch {
            report.record("load", false, error.description)
            return report
        }
        report.plugin = plugin.path
        report.record(
            "load", true,
            "\(plugin.path): \(plugin.name) \(plugin.version), ABI \(plugin.abiMajor).\(plugin.abiMinor), capabilities: "
                + (plugin.capabilities.isEmpty ? "none" : plugin.capabilities.joined(separator: ", ")))
        report.record(
            "metadata", !plugin.name.isEmpty && !plugin.version.isEmpty,
            plugin.name.isEmpty || plugin.version.isEmpty
                ? "name and version must not be empty" : "name and version set")

        let recorder = MisbehaviourRecorder()
        let logger = Logger(label: "taskhost.plugin-check") { _ in SwiftLogNoOpLogHandler() }

        // Bad configuration must be refused, by validate and by create.
        let malformed = "{\"unterminated"
        if plugin.hasValidate {
            let message = plugin.validate(configuration: malformed)
            report.record(
                "validate refuses malformed JSON", message != nil,
                message.map { "refused: \($0)" } ?? "accepted \(malformed)")
        } else {
            report.record("validate refuses malformed JSON", nil, "the plugin has no validate function")
        }
        do {
            let instance = try plugin.makeInstance(configuration: malformed, logger: logger)
            instance.destroy()
            report.record("create refuses malformed JSON", false, "create accepted \(malformed)")
        } catch {
            report.record("create refuses malformed JSON", true, "refused: \(error.message)")
        }

        // The given configuration must be accepted.
        if let message = plugin.validate(configuration: configuration) {
            report.record("validate accepts the configuration", false, message)
        } else {
            report.record("validate accepts the configuration", plugin.hasValidate ? true : nil, configuration)
        }
        let instance: PluginInstance
        do {
            instance = try plugin.makeInstance(
                configuration: configuration, logger: logger, onMisbehaviour: { recorder.record($0) })
            report.record("create", true, "instance created with \(configuration)")
        } catch {
            report.record("create", false, error.description)
            return report
        }

        // Concurrent tasks on distinct targets, each completed exactly once, statuses known.
        let outcomes = Mutex<[UInt64: [Int32]]>([:])
        // The first execution that never completes ends the run: one is enough to fail, and the
        // rest would each wait out the timeout.
        let stopRun = Mutex<(@Sendable () -> Void)?>(nil)
        let stoppedEarly = Atomic<Bool>(false)
        let executor = PluginExecutor(instance: instance, abandonAfter: .seconds(5)) { _, context, outcome in
            outcomes.withLock { $0[context.sequence, default: []].append(outcome.status) }
            if outcome.status == TH_TIMEOUT, !stoppedEarly.exchange(true, ordering: .relaxed) {
                stopRun.withLock { $0 }?()
            }
        }
        let items = (0..<tasks).map {
            TaskItem(targetId: .string("check-\($0 % targets)"), payload: payload, id: "check-\($0)")
        }
        let scheduler = Scheduler(
            executor: executor,
            configuration: SchedulerConfiguration(maxConcurrency: 16, timeout: .seconds(10)))
        stopRun.withLock { $0 = { scheduler.shutdown(gracePeriod: .zero) } }
        let summary = await scheduler.run(TaskList(items))
        let seen = outcomes.withLock { $0 }
        let once = seen.count == tasks && seen.values.allSatisfy { $0.count == 1 }
        let statuses = Set(seen.values.flatMap { $0 })
        let known: Set<Int32> = [
            TH_OK, TH_ERROR, TH_RETRYABLE, TH_TIMEOUT, TH_CANCELLED, TH_PERMANENT, TH_NOT_SUPPORTED,
        ]
        report.record(
            "concurrent tasks on distinct targets", once && summary.admitted == tasks,
            "\(tasks) tasks over \(targets) targets, up to 16 at once: \(summary.succeeded) succeeded, "
                + "\(summary.failed) failed, \(seen.count) answered"
                + (stoppedEarly.load(ordering: .relaxed)
                    ? "; stopped at the first execution that timed out (sequence "
                        + "\(seen.filter { $0.value.contains(TH_TIMEOUT) }.keys.min() ?? 0))" : ""))
        let misbehaviour = recorder.events.withLock { $0 }.map(\.description)
        report.record(
            "completion exactly once", once && misbehaviour.isEmpty,
            misbehaviour.isEmpty ? "every execution completed once" : misbehaviour.prefix(3).joined(separator: "; "))
        report.record(
            "error mapping", statuses.isSubset(of: known),
            "statuses seen: " + statuses.sorted().map { StatusName.of($0) }.joined(separator: ", "))

        // Cancellation of a pending execution, when the plugin offers it.
        if let cancel = instance.cancel {
            let token = CallToken()
            let opaque = Unmanaged.passRetained(token).toOpaque()
            var outcome = th_outcome()
            outcome.struct_size = UInt32(MemoryLayout<th_outcome>.size)
            let task = TaskItem(targetId: "check-cancel", payload: payload)
            let status = withPluginTask(task, ExecutionContext(sequence: UInt64(tasks), attempt: 1)) {
                plugin.table.pointee.execute(instance.instance, $0, OpaquePointer(opaque), &outcome)
            }
            if status == TH_PENDING {
                cancel.pointee.cancel(instance.instance, OpaquePointer(opaque))
                let answer = await withTaskGroup(of: PluginOutcome?.self) { group in
                    group.addTask { await token.wait() }
                    group.addTask {
                        try? await Task.sleep(for: .seconds(5))
                        return nil
                    }
                    let first = await group.next() ?? nil
                    group.cancelAll()
                    if first == nil { _ = token.abandon(after: .seconds(5), plugin: plugin.name) }
                    return first
                }
                report.record(
                    "cancellation", answer != nil,
                    answer.map { "completed after cancel with \(StatusName.of($0.status))" }
                        ?? "no completion within 5 s of cancel")
            } else {
                Unmanaged<CallToken>.fromOpaque(opaque).release()
                report.record("cancellation", nil, "the task completed synchronously (\(StatusName.of(status)))")
            }
        } else {
            report.record("cancellation", nil, "the plugin does not offer \(TH_CAPABILITY_CANCEL_V1)")
        }
        instance.destroy()
        report.record("destroy", true, "instance destroyed")
        return report
    }
}

/// A task sequence from an array.
package struct TaskList<Payload: Sendable>: AsyncSequence, Sendable {
    package let items: [TaskItem<Payload>]
    package init(_ items: [TaskItem<Payload>]) { self.items = items }
    package struct AsyncIterator: AsyncIteratorProtocol {
        package var base: IndexingIterator<[TaskItem<Payload>]>
        package mutating func next() async -> TaskItem<Payload>? { base.next() }
    }
    package func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: items.makeIterator()) }
}
