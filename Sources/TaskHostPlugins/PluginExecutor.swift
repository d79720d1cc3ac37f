import CTaskHostPlugin
import CTaskHostSystem
import Dispatch
import Logging
import Synchronization
import TaskHostJSON
import TaskHostScheduler

#if canImport(Glibc)
    import Glibc
#endif

/// What a plugin reported for one execution, copied out of its `th_outcome`.
package struct PluginOutcome: Sendable, Equatable {
    package var status: Int32
    package var retryAfterMilliseconds: Int64
    package var message: String?
    package var output: String?

    public init(_ outcome: th_outcome) {
        status = outcome.status
        retryAfterMilliseconds = outcome.retry_after_ms
        message = Self.string(outcome.message)
        output = Self.string(outcome.output)
    }

    public init(status: Int32, message: String?) {
        self.status = status
        retryAfterMilliseconds = -1
        self.message = message
        output = nil
    }

    package static func string(_ value: th_str) -> String? {
        guard let pointer = value.ptr, value.len > 0 else { return nil }
        return String(
            decoding: UnsafeRawBufferPointer(start: pointer, count: Int(value.len)), as: UTF8.self)
    }
}

/// A failed plugin execution, as the scheduler sees it.
package struct PluginFailure: Error, CustomStringConvertible, Sendable {
    package var plugin: String
    package var outcome: PluginOutcome
    package var description: String {
        "\(plugin): \(StatusName.of(outcome.status))" + (outcome.message.map { ": \($0)" } ?? "")
    }
}

/// The host side of the host API table: the logger and the plugin's name.
package final class HostContext: Sendable {
    package let logger: Logger
    package let pluginName: String
    package let quarantine = Mutex(Quarantine())
    /// Told of every misbehaviour, after it is logged: metrics, the conformance check.
    package let observer: (@Sendable (PluginMisbehaviour) -> Void)?

    public init(logger: Logger, pluginName: String, observer: (@Sendable (PluginMisbehaviour) -> Void)? = nil) {
        self.logger = logger
        self.pluginName = pluginName
        self.observer = observer
    }

    package func misbehaviour(_ event: PluginMisbehaviour) {
        logger.error(
            "plugin misbehaviour: \(event)", metadata: ["plugin": "\(pluginName)", "misbehaviour": "\(event.kind)"])
        observer?(event)
    }
}

/// A plugin breaking a rule of the ABI (taskhost_plugin.h). The host survives it: it logs it,
/// tells the instance's observer (the metrics count it; `taskhost plugin check` fails on it), and
/// goes on as the case says.
package enum PluginMisbehaviour: Sendable, Hashable, CustomStringConvertible {
    /// complete() with a NULL token or outcome: ignored.
    case nullCompletion(token: Bool)
    /// complete() with TH_PENDING as the status: treated as TH_ERROR.
    case pendingCompletion
    /// A token completed twice, or after its execution was abandoned: the second is ignored.
    case lateOrDoubleCompletion
    /// A token completed, and a status also returned from execute: the returned status stands,
    /// the completion is ignored.
    case completionAndSynchronousStatus(status: Int32, sequence: UInt64)
    /// No completion `after` a cancel (or the timeout or shutdown of a plugin without cancel):
    /// the execution is abandoned, a later completion ignored.
    case noCompletion(after: Duration, cancellable: Bool, target: String, sequence: UInt64, attempt: Int)
    /// An outcome with a status the ABI does not define: a non-retryable failure.
    case unknownStatus(Int32)

    /// A short name, for metric labels.
    package var kind: String {
        switch self {
        case .nullCompletion: "null_completion"
        case .pendingCompletion: "pending_completion"
        case .lateOrDoubleCompletion: "late_or_double_completion"
        case .completionAndSynchronousStatus: "completion_and_status"
        case .noCompletion: "no_completion"
        case .unknownStatus: "unknown_status"
        }
    }

    package var description: String {
        switch self {
        case .nullCompletion(let token):
            "complete() called with a NULL \(token ? "token" : "outcome")"
        case .pendingCompletion:
            "complete() with status TH_PENDING; treated as TH_ERROR"
        case .lateOrDoubleCompletion:
            "a token was completed twice, or after it was abandoned; the second completion is ignored"
        case .completionAndSynchronousStatus(let status, let sequence):
            "completed a token and also returned \(StatusName.of(status)) from execute (sequence \(sequence))"
        case .noCompletion(let wait, let cancellable, let target, let sequence, let attempt):
            "no completion \(wait) after "
                + (cancellable ? "cancel" : "its timeout or shutdown (the plugin cannot be cancelled)")
                + " (target \(target), sequence \(sequence), attempt \(attempt)); execution abandoned"
        case .unknownStatus(let status):
            "returned \(StatusName.of(status)) as an outcome"
        }
    }
}

/// Keeps completed tokens alive for a while, so that a second completion of a token is
/// detected (and logged) instead of touching freed memory.
package struct Quarantine: ~Copyable {
    package static let capacity = 4096
    package var tokens: [Unmanaged<CallToken>] = []
    package var next = 0

    package mutating func keep(_ token: Unmanaged<CallToken>) -> Unmanaged<CallToken>? {
        if tokens.count < Self.capacity {
            tokens.append(token)
            return nil
        }
        let evicted = tokens[next]
        tokens[next] = token
        next = (next + 1) % Self.capacity
        return evicted
    }

    deinit { for token in tokens { token.release() } }
}

/// One pending execution: the `th_completion *` handed to the plugin.
package final class CallToken: Sendable {
    package enum State {
        case running
        case completed(PluginOutcome)
        case waiting(CheckedContinuation<PluginOutcome, Never>)
        case consumed
        case abandoned
    }

    package let state = Mutex(State.running)
    /// Set by the first `complete`: lets a synchronous result check the token without the lock.
    package let touched = Atomic<Bool>(false)

    /// Records a completion. False when the token was already completed or abandoned.
    package func complete(_ outcome: PluginOutcome) -> Bool {
        touched.store(true, ordering: .releasing)
        enum Action { case stored, resume(CheckedContinuation<PluginOutcome, Never>), refused }
        let action: Action = state.withLock { state in
            switch state {
            case .running:
                state = .completed(outcome)
                return .stored
            case .waiting(let continuation):
                state = .consumed
                return .resume(continuation)
            case .completed, .consumed, .abandoned:
                return .refused
            }
        }
        switch action {
        case .stored: return true
        case .resume(let continuation):
            continuation.resume(returning: outcome)
            return true
        case .refused: return false
        }
    }

    /// Whether nothing happened to the token yet.
    package var isUntouched: Bool { !touched.load(ordering: .acquiring) }

    /// Waits for the completion.
    package func wait() async -> PluginOutcome {
        await withCheckedContinuation { continuation in
            let ready: PluginOutcome? = state.withLock { state in
                if case .completed(let outcome) = state {
                    state = .consumed
                    return outcome
                }
                state = .waiting(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Gives up on a plugin that did not complete after cancellation. True when it was waited for.
    package func abandon(after timeout: Duration, plugin: String) -> Bool {
        let waiter: CheckedContinuation<PluginOutcome, Never>? = state.withLock { state in
            guard case .waiting(let continuation) = state else { return nil }
            state = .abandoned
            return continuation
        }
        waiter?.resume(
            returning: PluginOutcome(
                status: TH_TIMEOUT,
                message: "\(plugin) did not complete within \(timeout) after cancel; execution abandoned"))
        return waiter != nil
    }
}

/// A plugin instance: created from a configuration, destroyed once.
package final class PluginInstance: @unchecked Sendable {
    package let plugin: LoadedPlugin
    package let instance: UnsafeMutableRawPointer?
    package let host: UnsafeMutablePointer<th_host_api>
    package let context: HostContext
    package let cancel: UnsafePointer<th_cancel_v1>?
    private let destroyed = Atomic<Bool>(false)

    public init(
        plugin: LoadedPlugin, configuration json: String, logger: Logger,
        onMisbehaviour: (@Sendable (PluginMisbehaviour) -> Void)? = nil
    ) throws(PluginError) {
        self.plugin = plugin
        let context = HostContext(logger: logger, pluginName: plugin.name, observer: onMisbehaviour)
        self.context = context
        let host = UnsafeMutablePointer<th_host_api>.allocate(capacity: 1)
        self.host = host
        host.initialize(
            to: th_host_api(
                abi_major: UInt32(TH_ABI_MAJOR), abi_minor: UInt32(TH_ABI_MINOR),
                struct_size: UInt32(MemoryLayout<th_host_api>.size), reserved0: 0,
                host_context: Unmanaged.passRetained(context).toOpaque(),
                log: hostLog, complete: hostComplete, get_capability: hostCapability))
        var instance: UnsafeMutableRawPointer?
        var buffer = [CChar](repeating: 0, count: 4096)
        var json = json
        let status = json.withUTF8 { utf8 in
            buffer.withUnsafeMutableBufferPointer { out in
                plugin.table.pointee.create(
                    host,
                    th_str(
                        ptr: UnsafeRawPointer(utf8.baseAddress)?.assumingMemoryBound(to: CChar.self),
                        len: UInt64(utf8.count)),
                    &instance, th_message_buffer(ptr: out.baseAddress, cap: UInt64(out.count)))
            }
        }
        guard status == TH_OK else {
            let message = cText(buffer)
            Unmanaged<HostContext>.fromOpaque(host.pointee.host_context).release()
            host.deallocate()
            throw PluginError(
                status == TH_INVALID_CONFIG ? .invalidConfiguration : .createFailed, path: plugin.path,
                message: "\(plugin.name) refused its configuration (\(StatusName.of(status)))"
                    + (message.isEmpty ? "" : ": \(message)"),
                remedy: plugin.configSchema == nil
                    ? "Fix the plugin's configuration (the plugin publishes no schema: see its documentation)."
                    : "Fix the plugin's configuration; `taskhost plugin inspect \(plugin.path)` shows its schema.")
        }
        self.instance = instance
        if plugin.capabilities.contains(TH_CAPABILITY_CANCEL_V1),
            let capability = plugin.table.pointee.get_capability?(instance, TH_CAPABILITY_CANCEL_V1)
        {
            cancel = UnsafePointer(capability.assumingMemoryBound(to: th_cancel_v1.self))
        } else {
            cancel = nil
        }
    }

    /// Calls the plugin's destroy. Call once, after every execution completed.
    package func destroy() {
        guard !destroyed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        plugin.table.pointee.destroy(instance)
    }
}

/// Runs tasks through a plugin instance under the scheduler.
///
/// A synchronous completion costs one call and one small allocation: no continuation, no thread
/// hop (``executeImmediately(_:context:)``). A pending one is awaited in ``execute(_:context:)``;
/// a timeout cancels it through `taskhost.cancel/1` when the plugin offers it, and an execution
/// still not completed `abandonAfter` later is abandoned (logged; its late completion ignored).
///
/// Its per-task entry points are `public`, not `package`, though the module is in no product:
/// `-cross-module-optimization` makes only public bodies available to the importing module, and
/// with `package` ones the plugin path ran at 0.87 of its speed (paired: P1 14.5 -> 16.4 million
/// tasks/s, P7 13.8 -> 15.2).
public final class PluginExecutor: TaskItemExecutor, Sendable {
    public typealias Payload = String

    package struct Key: Hashable {
        package var sequence: UInt64
        package var attempt: Int
    }

    package let instance: PluginInstance
    package let abandonAfter: Duration
    /// The plugin's execute and its instance, read once: the hot path touches no reference count.
    nonisolated(unsafe) let executeFunction:
        @convention(c) (
            UnsafeMutableRawPointer?, UnsafePointer<th_task>?, OpaquePointer?, UnsafeMutablePointer<th_outcome>?
        ) -> Int32
    nonisolated(unsafe) let instancePointer: UnsafeMutableRawPointer?
    package let pending = Mutex<[Key: CallToken]>([:])
    package let outputs: (@Sendable (TaskItem<String>, ExecutionContext, PluginOutcome) -> Void)?
    /// The scheduler's timeout of each attempt (`timeoutMs`): `th_task.deadline_ns` is the call's
    /// time plus it; nil for none (deadline 0).
    package let attemptTimeout: Int64?

    /// - Parameters:
    ///   - abandonAfter: how long to wait for a completion after cancelling an execution.
    ///   - attemptTimeout: the scheduler's timeout of each attempt, told to the plugin as a deadline.
    ///   - outcomes: called with every outcome (results sinks, conformance checks).
    package init(
        instance: PluginInstance, abandonAfter: Duration = .seconds(5), attemptTimeout: Duration? = nil,
        outcomes: (@Sendable (TaskItem<String>, ExecutionContext, PluginOutcome) -> Void)? = nil
    ) {
        self.instance = instance
        self.abandonAfter = abandonAfter
        self.attemptTimeout = attemptTimeout.map { timeout in
            timeout.components.seconds &* 1_000_000_000 &+ timeout.components.attoseconds / 1_000_000_000
        }
        executeFunction = instance.plugin.table.pointee.execute
        instancePointer = instance.instance
        self.outputs = outcomes
    }

    public var supportsImmediateExecution: Bool { true }

    public func executeImmediately(_ task: TaskItem<String>, context: ExecutionContext) -> ImmediateOutcome {
        switch attemptInline(task, context, wantsOutcome: outputs != nil) {
        case .ok: return .succeeded
        case .pending: return .deferred
        case .outcome(let result):
            outputs?(task, context, result)
            return map(result).map { .failed($0) } ?? .succeeded
        }
    }

    public func execute(_ task: TaskItem<String>, context: ExecutionContext) async throws {
        let result = await complete(task, context: context)
        outputs?(task, context, result)
        if let failure = map(result) { throw failure }
    }

    /// What an inline attempt came to: success (its outcome not decoded), an outcome, or pending.
    package enum InlineResult {
        case ok
        case outcome(PluginOutcome)
        case pending
    }

    /// Calls the plugin's execute; a pending execution's token is kept for ``complete(_:context:)``.
    @inline(__always)
    package func attemptInline(_ task: TaskItem<String>, _ context: ExecutionContext, wantsOutcome: Bool)
        -> InlineResult
    {
        // A token per call, reused on this thread while plugins complete synchronously: the common
        // path allocates nothing and touches no reference count. The cache's reference becomes the
        // plugin's for the call, and goes back to the cache after a synchronous result.
        let token = TokenCache.take()
        let opaque = token.toOpaque()
        var outcome = th_outcome()
        outcome.struct_size = UInt32(MemoryLayout<th_outcome>.size)
        outcome.retry_after_ms = -1
        let status = withPluginTask(task, context, timeout: attemptTimeout) { pluginTask in
            executeFunction(instancePointer, pluginTask, OpaquePointer(opaque), &outcome)
        }
        if status == TH_PENDING {
            // The plugin keeps its reference until it completes; the table holds another.
            let call = token.takeUnretainedValue()
            pending.withLock { $0[Key(sequence: context.sequence, attempt: context.attempt)] = call }
            return .pending
        }
        outcome.status = status
        if token._withUnsafeGuaranteedRef({ $0.isUntouched }) {
            // A synchronous result: the token was never used and serves the thread's next call.
            TokenCache.give(token)
        } else {
            // The plugin completed the token and also returned a result: its complete() kept the
            // plugin's reference in quarantine; the token is not reused.
            instance.context.misbehaviour(.completionAndSynchronousStatus(status: status, sequence: context.sequence))
        }
        if status == TH_OK, !wantsOutcome { return .ok }
        return .outcome(PluginOutcome(outcome))
    }

    /// The outcome of an attempt: awaited when it is pending, started first when it was not tried
    /// inline. A timeout or shutdown cancels it through the plugin's cancel; a plugin that does not
    /// complete `abandonAfter` later is abandoned.
    package func complete(_ task: TaskItem<String>, context: ExecutionContext) async -> PluginOutcome {
        let key = Key(sequence: context.sequence, attempt: context.attempt)
        var token = pending.withLock { $0.removeValue(forKey: key) }
        if token == nil {
            switch attemptInline(task, context, wantsOutcome: true) {
            case .ok: return PluginOutcome(status: TH_OK, message: nil)
            case .outcome(let result): return result
            case .pending: token = pending.withLock { $0.removeValue(forKey: key) }
            }
        }
        guard let token else { return PluginOutcome(status: TH_OK, message: nil) }
        let (target, sequence, attempt) = ("\(task.targetId)", context.sequence, context.attempt)
        let result = await withTaskCancellationHandler {
            await token.wait()
        } onCancel: {
            if let cancel = instance.cancel {
                cancel.pointee.cancel(instance.instance, OpaquePointer(Unmanaged.passUnretained(token).toOpaque()))
            }
            let name = instance.plugin.name
            let context = instance.context
            let cancellable = instance.cancel != nil
            let wait = abandonAfter
            let nanoseconds =
                UInt64(wait.components.seconds) * 1_000_000_000
                + UInt64(wait.components.attoseconds / 1_000_000_000)
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(nanoseconds))) {
                if token.abandon(after: wait, plugin: name) {
                    context.misbehaviour(
                        .noCompletion(
                            after: wait, cancellable: cancellable, target: target, sequence: sequence,
                            attempt: attempt))
                }
            }
        }
        return result
    }

    package func map(_ outcome: PluginOutcome) -> (any Error)? {
        if outcome.status == TH_OK { return nil }
        let failure = PluginFailure(plugin: instance.plugin.name, outcome: outcome)
        switch outcome.status {
        case TH_RETRYABLE where outcome.retryAfterMilliseconds >= 0:
            return RetryAfterError(after: .milliseconds(outcome.retryAfterMilliseconds), failure)
        case TH_ERROR, TH_RETRYABLE, TH_TIMEOUT, TH_CANCELLED:
            return failure
        case TH_PERMANENT, TH_INVALID_CONFIG, TH_NOT_SUPPORTED:
            return NonRetryableError(failure)
        default:
            instance.context.misbehaviour(.unknownStatus(outcome.status))
            return NonRetryableError(failure)
        }
    }
}

/// Lends a task to a plugin as a `th_task`, borrowed for the duration of `body`.
@inline(__always)
public func withPluginTask<R>(
    _ task: TaskItem<String>, _ context: ExecutionContext, timeout: Int64? = nil,
    _ body: (UnsafePointer<th_task>) -> R
) -> R {
    // The attempt's real deadline on the plugin's clock: the call starts now.
    let deadline = timeout.map { monotonicNanoseconds() &+ $0 }
    return withUTF8(task.payload) { payload in
        withUTF8(task.id ?? "") { id in
            switch task.targetId {
            case .string(let target):
                return withUTF8(target) { target in
                    var pluginTask = th_task(
                        struct_size: UInt32(MemoryLayout<th_task>.size), attempt: UInt32(clamping: context.attempt),
                        sequence: context.sequence, target_id: th_str(target), target_is_integer: 0,
                        reserved0: 0, target_integer: 0, task_id: th_str(id), payload: th_str(payload),
                        deadline_ns: deadline ?? 0)
                    return body(&pluginTask)
                }
            case .integer(let integer):
                return withDecimal(integer) { target in
                    var pluginTask = th_task(
                        struct_size: UInt32(MemoryLayout<th_task>.size), attempt: UInt32(clamping: context.attempt),
                        sequence: context.sequence, target_id: th_str(target), target_is_integer: 1,
                        reserved0: 0, target_integer: integer, task_id: th_str(id), payload: th_str(payload),
                        deadline_ns: deadline ?? 0)
                    return body(&pluginTask)
                }
            }
        }
    }
}

/// A string's UTF-8 bytes, borrowed without a copy when the string is contiguous (native
/// strings are), copied otherwise.
@inline(__always)
public func withUTF8<R>(_ text: String, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
    if let result = text.utf8.withContiguousStorageIfAvailable(body) { return result }
    var copy = text
    return copy.withUTF8(body)
}

extension th_str {
    public init(_ buffer: UnsafeBufferPointer<UInt8>) {
        self.init(
            ptr: UnsafeRawPointer(buffer.baseAddress)?.assumingMemoryBound(to: CChar.self), len: UInt64(buffer.count))
    }
}

// MARK: The host API given to plugins

private let hostLog: @convention(c) (UnsafeMutableRawPointer?, Int32, th_str) -> Void = { context, level, message in
    guard let context else { return }
    let host = Unmanaged<HostContext>.fromOpaque(context).takeUnretainedValue()
    let text = PluginOutcome.string(message) ?? ""
    let logLevel: Logger.Level =
        switch level {
        case TH_LOG_TRACE: .trace
        case TH_LOG_DEBUG: .debug
        case TH_LOG_INFO: .info
        case TH_LOG_WARNING: .warning
        default: .error
        }
    host.logger.log(level: logLevel, "\(text)", metadata: ["plugin": "\(host.pluginName)"])
}

private let hostComplete:
    @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<th_outcome>?) -> Void =
        { context, token, outcome in
            guard let context else { return }
            let host = Unmanaged<HostContext>.fromOpaque(context).takeUnretainedValue()
            guard let token, let outcome else {
                host.misbehaviour(.nullCompletion(token: token == nil))
                return
            }
            let unmanaged = Unmanaged<CallToken>.fromOpaque(UnsafeRawPointer(token))
            let call = unmanaged.takeUnretainedValue()
            var copy = outcome.pointee
            if copy.status == TH_PENDING {
                host.misbehaviour(.pendingCompletion)
                copy.status = TH_ERROR
            }
            guard call.complete(PluginOutcome(copy)) else {
                host.misbehaviour(.lateOrDoubleCompletion)
                return
            }
            // The plugin's reference: kept a while so that a second completion is still detected.
            if let evicted = host.quarantine.withLock({ $0.keep(unmanaged) }) { evicted.release() }
        }

private let hostCapability: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?) -> UnsafeRawPointer? = {
    _, _ in nil
}

/// Per-thread spare tokens for synchronous executions: a C thread-local slot holds a retained
/// token, handed out and given back without reference counting or a call into libc. A pthread
/// key, set once per thread, releases the slot's token when the thread exits.
package enum TokenCache {
    package static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { _ in
            if let spare = th_take_spare_token() { Unmanaged<CallToken>.fromOpaque(spare).release() }
        }
        return key
    }()

    /// A token with one reference, the caller's.
    @inline(__always)
    package static func take() -> Unmanaged<CallToken> {
        // Taken out: a nested call on this thread (a plugin calling back) gets its own.
        if let spare = th_take_spare_token() { return Unmanaged.fromOpaque(spare) }
        return fresh()
    }

    @inline(never)
    private static func fresh() -> Unmanaged<CallToken> {
        // Any non-null value: the key's destructor runs when this thread exits.
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: 1))
        return Unmanaged.passRetained(CallToken())
    }

    /// Gives a token's reference to this thread's cache.
    @inline(__always)
    package static func give(_ token: Unmanaged<CallToken>) {
        if let previous = th_swap_spare_token(token.toOpaque()) { Unmanaged<CallToken>.fromOpaque(previous).release() }
    }
}

extension PluginExecutor: AnsweringExecutor {
    package func answerImmediately(_ task: TaskItem<String>, context: ExecutionContext) -> Answer {
        switch attemptInline(task, context, wantsOutcome: true) {
        case .ok: return .output(nil)
        case .pending: return .deferred
        case .outcome(let result): return map(result).map { .failed($0) } ?? .output(result.output)
        }
    }

    package func answer(_ task: TaskItem<String>, context: ExecutionContext) async throws -> String? {
        let result = await complete(task, context: context)
        if let failure = map(result) { throw failure }
        return result.output
    }
}
