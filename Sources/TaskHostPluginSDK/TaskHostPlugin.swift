import CTaskHostPlugin
import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#endif

/// An executor plugin written in Swift. Implement it, then export it with one line:
///
/// ```swift
/// @_cdecl("taskhost_plugin_entry") public func entry() -> UnsafeRawPointer { exportPlugin(MyPlugin.self) }
/// ```
///
/// The host never runs two tasks of one target in an instance at once, and starts a target's
/// tasks in arrival order.
public protocol TaskHostPlugin: Sendable {
    /// The configuration, decoded from the JSON the host passes (`{}` when none).
    associatedtype Configuration: Decodable & Sendable

    static var name: String { get }
    static var version: String { get }
    static var summary: String? { get }
    /// A JSON Schema of ``Configuration``, shown by `taskhost plugin inspect`.
    static var configSchema: String? { get }

    /// Checks a decoded configuration without creating anything (`taskhost check`, and before
    /// `init`). Throw ``PluginExecutionError/invalidConfiguration(_:)`` naming the key. The
    /// default accepts every configuration that decodes.
    static func validate(_ configuration: Configuration) throws

    /// Creates an instance from a configuration that passed ``validate(_:)``.
    init(configuration: Configuration, host: PluginHost) throws

    /// Runs one attempt. Return an output for the results sink, or throw: ``PluginExecutionError``
    /// chooses the status; any other error is a retryable `TH_ERROR` with its description.
    /// Cancellation (a timeout or shutdown) cancels this task.
    func execute(_ task: PluginTask) async throws -> String?

    /// Runs one attempt without suspending, when it can: return `.finished(output:)`, or
    /// `.deferred` to have ``execute(_:)`` called instead. The default defers.
    ///
    /// The task is the host's own memory, lent for this call: its fields are decoded only when
    /// read, and it cannot be kept (``BorrowedTask`` is noncopyable). ``BorrowedTask/owned()``
    /// copies it out.
    func executeImmediately(_ task: borrowing BorrowedTask) throws -> ImmediateResult
}

extension TaskHostPlugin {
    public static var summary: String? { nil }
    public static var configSchema: String? { nil }
    public static func validate(_ configuration: Configuration) throws {}
    public func executeImmediately(_ task: borrowing BorrowedTask) throws -> ImmediateResult { .deferred }
}

public enum ImmediateResult: Sendable {
    case finished(output: String?)
    case deferred
}

/// Failures with a chosen status.
public enum PluginExecutionError: Error, Sendable {
    /// `TH_RETRYABLE`, optionally after a delay.
    case retryable(String, after: Duration? = nil)
    /// `TH_PERMANENT`: retrying cannot help; the host skips the remaining attempts.
    case permanent(String)
    /// `TH_INVALID_CONFIG`, from `init`.
    case invalidConfiguration(String)
}

/// One execution, copied out of the host's `th_task`.
public struct PluginTask: Sendable {
    /// The target id as text; an integer target in decimal, rendered when read.
    public var targetId: String { targetText ?? String(targetInteger ?? 0) }
    /// The target id as an integer, when the input gave an integer.
    public var targetInteger: Int64?
    public var id: String?
    public var payload: String
    public var sequence: UInt64
    public var attempt: Int
    /// The attempt's deadline on `CLOCK_MONOTONIC`, in nanoseconds (`th_task.deadline_ns`); nil
    /// when the attempt has no timeout. Past it the host cancels the attempt.
    public var deadlineNanoseconds: Int64?
    /// The time left before ``deadlineNanoseconds``, read when called; nil without a timeout.
    public var timeRemaining: Duration? { deadlineNanoseconds.map(remaining(until:)) }
    /// The target's text for a string target; nil for an integer one.
    @usableFromInline let targetText: String?

    @usableFromInline init(
        targetInteger: Int64?, id: String?, payload: String, sequence: UInt64, attempt: Int, targetText: String?,
        deadlineNanoseconds: Int64?
    ) {
        self.targetInteger = targetInteger
        self.id = id
        self.payload = payload
        self.sequence = sequence
        self.attempt = attempt
        self.targetText = targetText
        self.deadlineNanoseconds = deadlineNanoseconds
    }
}

/// The time from now until a `CLOCK_MONOTONIC` deadline in nanoseconds (negative when past).
func remaining(until deadline: Int64) -> Duration {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return .nanoseconds(deadline - (Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)))
}

/// One execution as the host lent it to ``TaskHostPlugin/executeImmediately(_:)``: a view of the
/// host's `th_task`, valid for that call only. Nothing is copied or decoded until a field is read,
/// so a plugin pays only for what it reads. It is noncopyable and passed `borrowing`, so the
/// compiler refuses to let it outlive the call (stored, captured by an escaping closure or a
/// `Task`); ``owned()`` copies it into a ``PluginTask`` that can be kept.
public struct BorrowedTask: ~Copyable {
    @usableFromInline let raw: UnsafePointer<th_task>

    @inlinable init(_ raw: UnsafePointer<th_task>) { self.raw = raw }

    /// The target id as text; an integer target in decimal.
    @inlinable public var targetId: String { decodedString(raw.pointee.target_id) }
    /// The target id as an integer, when the input gave an integer.
    @inlinable public var targetInteger: Int64? {
        raw.pointee.target_is_integer != 0 ? raw.pointee.target_integer : nil
    }
    /// The producer's id, when it gave one.
    @inlinable public var id: String? { raw.pointee.task_id.len > 0 ? decodedString(raw.pointee.task_id) : nil }
    /// The payload as text (invalid UTF-8 repaired), decoded when read.
    @inlinable public var payload: String { decodedString(raw.pointee.payload) }
    /// The admission number: unique per run, increasing in arrival order.
    @inlinable public var sequence: UInt64 { raw.pointee.sequence }
    /// 1 for the first attempt.
    @inlinable public var attempt: Int { Int(raw.pointee.attempt) }
    /// The attempt's deadline on `CLOCK_MONOTONIC`, in nanoseconds; nil without a timeout.
    @inlinable public var deadlineNanoseconds: Int64? { raw.pointee.deadline_ns != 0 ? raw.pointee.deadline_ns : nil }
    /// The time left before ``deadlineNanoseconds``, read when called; nil without a timeout.
    public var timeRemaining: Duration? { deadlineNanoseconds.map(remaining(until:)) }

    /// Calls `body` with the payload's bytes, in place: valid only inside `body`.
    @inlinable public func withPayloadBytes<R, E: Error>(
        _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: raw.pointee.payload.ptr, count: Int(raw.pointee.payload.len)))
    }

    /// A copy that can be kept, sent to another task, or passed to ``TaskHostPlugin/execute(_:)``.
    @inlinable public func owned() -> PluginTask {
        let integer = raw.pointee.target_is_integer != 0
        return PluginTask(
            targetInteger: integer ? raw.pointee.target_integer : nil, id: id, payload: payload,
            sequence: sequence, attempt: attempt, targetText: integer ? nil : targetId,
            deadlineNanoseconds: deadlineNanoseconds)
    }
}

@inlinable func decodedString(_ value: th_str) -> String {
    guard let pointer = value.ptr, value.len > 0 else { return "" }
    return String(decoding: UnsafeRawBufferPointer(start: pointer, count: Int(value.len)), as: UTF8.self)
}

/// The host's services: its structured log.
public struct PluginHost: @unchecked Sendable {
    let api: UnsafePointer<th_host_api>

    public enum Level: Int32, Sendable {
        case trace = 0, debug, info, warning, error
    }

    /// Writes a line into the host's log, tagged with the plugin's name. Any thread.
    public func log(_ level: Level, _ message: String) {
        guard let log = api.pointee.log else { return }
        var message = message
        message.withUTF8 { log(api.pointee.host_context, level.rawValue, th_str($0)) }
    }
}

/// Registers `type` as this library's plugin and returns the table for `taskhost_plugin_entry`.
public func exportPlugin<P: TaskHostPlugin>(_ type: P.Type) -> UnsafeRawPointer {
    Registry.shared.register(type)
}

// MARK: The C side

/// The one plugin of this library, erased so that the C thunks (which cannot be generic) reach it.
protocol ErasedFactory: Sendable {
    func validate(_ json: String) -> String?
    func create(_ json: String, host: UnsafePointer<th_host_api>) throws -> InstanceBox
}

struct Factory<P: TaskHostPlugin>: ErasedFactory {
    func decode(_ json: String) throws -> P.Configuration {
        do {
            return try JSONDecoder().decode(P.Configuration.self, from: Data(json.utf8))
        } catch let error as DecodingError {
            throw PluginExecutionError.invalidConfiguration(Self.describe(error))
        }
    }

    func validate(_ json: String) -> String? {
        do {
            try P.validate(try decode(json))
            return nil
        } catch {
            return Self.message(error)
        }
    }

    func create(_ json: String, host: UnsafePointer<th_host_api>) throws -> InstanceBox {
        let configuration = try decode(json)
        try P.validate(configuration)
        return TypedInstanceBox(plugin: try P(configuration: configuration, host: PluginHost(api: host)), host: host)
    }

    static func message(_ error: any Error) -> String {
        if case PluginExecutionError.invalidConfiguration(let text) = error { return text }
        return String(describing: error)
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return keys.isEmpty ? "the configuration" : "key '" + keys.joined(separator: ".") + "'"
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = context.codingPath.map(\.stringValue).joined(separator: ".")
            return "missing key '\(parent.isEmpty ? "" : parent + ".")\(key.stringValue)': add it"
        case .typeMismatch(let type, let context):
            return "\(path(context)): expected \(type)"
        case .valueNotFound(let type, let context):
            return "\(path(context)): expected a \(type), found null"
        case .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default:
            return String(describing: error)
        }
    }
}

final class Registry: @unchecked Sendable {
    static let shared = Registry()
    private var lock = pthread_mutex_t()
    private var factory: (any ErasedFactory)?
    private var table: UnsafeMutablePointer<th_plugin>?

    init() { pthread_mutex_init(&lock, nil) }

    var current: (any ErasedFactory)? {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return factory
    }

    func register<P: TaskHostPlugin>(_ type: P.Type) -> UnsafeRawPointer {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        if let table { return UnsafeRawPointer(table) }
        factory = Factory<P>()
        let table = UnsafeMutablePointer<th_plugin>.allocate(capacity: 1)
        table.initialize(
            to: th_plugin(
                abi_major: UInt32(TH_ABI_MAJOR), abi_minor: UInt32(TH_ABI_MINOR),
                struct_size: UInt32(MemoryLayout<th_plugin>.size), reserved0: 0,
                name: strdup(P.name), version: strdup(P.version), description: P.summary.map { strdup($0) } ?? nil,
                config_schema: P.configSchema.map { strdup($0) } ?? nil,
                validate: validateThunk, create: createThunk, destroy: destroyThunk, execute: executeThunk,
                get_capability: capabilityThunk))
        self.table = table
        return UnsafeRawPointer(table)
    }
}

/// An instance as the host sees it: the host API and the running executions. The C thunks reach
/// the plugin through one class method (``execute(_:_:_:)``), with no existential to copy and no
/// reference count touched.
class InstanceBox: @unchecked Sendable {
    let host: UnsafePointer<th_host_api>
    /// The thread buffers' key, read once here instead of through a lazy global on every call.
    let bufferKey = threadBufferKey
    private var lock = pthread_mutex_t()
    private var running: [UInt: Task<Void, Never>] = [:]

    init(host: UnsafePointer<th_host_api>) {
        self.host = host
        pthread_mutex_init(&lock, nil)
    }

    /// Runs one execution of the plugin; overridden by ``TypedInstanceBox``.
    func execute(
        _ task: UnsafePointer<th_task>, _ token: OpaquePointer?, _ outcome: UnsafeMutablePointer<th_outcome>
    ) -> Int32 {
        TH_ERROR
    }

    private var finishedEarly: Set<UInt> = []

    /// Records a running execution, unless it already finished.
    func track(_ token: UInt, _ task: Task<Void, Never>) {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        if finishedEarly.remove(token) == nil { running[token] = task }
    }

    func finished(_ token: UInt) {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        if running.removeValue(forKey: token) == nil { finishedEarly.insert(token) }
    }

    func cancel(_ token: UInt) {
        pthread_mutex_lock(&lock)
        let task = running[token]
        pthread_mutex_unlock(&lock)
        task?.cancel()
    }
}

/// The box of a plugin of type `P`: its calls are direct and specialized.
final class TypedInstanceBox<P: TaskHostPlugin>: InstanceBox, @unchecked Sendable {
    let plugin: P

    init(plugin: P, host: UnsafePointer<th_host_api>) {
        self.plugin = plugin
        super.init(host: host)
    }

    override func execute(
        _ task: UnsafePointer<th_task>, _ token: OpaquePointer?, _ outcome: UnsafeMutablePointer<th_outcome>
    ) -> Int32 {
        TaskHostPluginSDK.execute(plugin, self, task, token, outcome)
    }
}

private func write(_ message: String, to buffer: th_message_buffer) {
    guard let out = buffer.ptr, buffer.cap > 0 else { return }
    let bytes = Array(message.utf8.prefix(Int(buffer.cap) - 1))
    for (i, byte) in bytes.enumerated() { out[i] = CChar(bitPattern: byte) }
    out[bytes.count] = 0
}

extension th_str {
    init(_ buffer: UnsafeBufferPointer<UInt8>) {
        self.init(
            ptr: UnsafeRawPointer(buffer.baseAddress)?.assumingMemoryBound(to: CChar.self), len: UInt64(buffer.count))
    }
}

/// Maps a thrown error to a status and message. Nothing Swift crosses the boundary.
private func status(for error: any Error) -> (Int32, String, Int64) {
    switch error {
    case PluginExecutionError.retryable(let message, let after):
        let ms = after.map { Int64($0.components.seconds) * 1000 + $0.components.attoseconds / 1_000_000_000_000_000 }
        return (TH_RETRYABLE, message, ms ?? -1)
    case PluginExecutionError.permanent(let message):
        return (TH_PERMANENT, message, -1)
    case PluginExecutionError.invalidConfiguration(let message):
        return (TH_INVALID_CONFIG, message, -1)
    case is CancellationError:
        return (TH_CANCELLED, "cancelled", -1)
    default:
        return (TH_ERROR, String(describing: error), -1)
    }
}

/// A per-thread buffer for synchronous outcome strings, valid until the thread's next call: a
/// plain C allocation behind the thread-specific value, so a call touches no reference count.
private struct ThreadBuffer {
    var storage: UnsafeMutableRawPointer
    var capacity: Int
}

private let threadBufferKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { value in
        guard let buffer = value?.assumingMemoryBound(to: ThreadBuffer.self) else { return }
        buffer.pointee.storage.deallocate()
        buffer.deallocate()
    }
    return key
}()

/// This thread's buffer, grown to at least `count` bytes.
@inline(__always)
private func threadBuffer(_ key: pthread_key_t, count: Int) -> UnsafeMutableRawPointer {
    if let existing = pthread_getspecific(key)?.assumingMemoryBound(to: ThreadBuffer.self),
        existing.pointee.capacity >= count
    {
        return existing.pointee.storage
    }
    return growThreadBuffer(key, count: count)
}

@inline(never)
private func growThreadBuffer(_ key: pthread_key_t, count: Int) -> UnsafeMutableRawPointer {
    let buffer: UnsafeMutablePointer<ThreadBuffer>
    if let existing = pthread_getspecific(key)?.assumingMemoryBound(to: ThreadBuffer.self) {
        buffer = existing
        buffer.pointee.storage.deallocate()
    } else {
        buffer = .allocate(capacity: 1)
        buffer.initialize(to: ThreadBuffer(storage: .allocate(byteCount: 1, alignment: 1), capacity: 0))
        pthread_setspecific(key, buffer)
        buffer.pointee.storage.deallocate()
    }
    let capacity = max(count, 256, buffer.pointee.capacity * 2)
    buffer.pointee = ThreadBuffer(storage: .allocate(byteCount: capacity, alignment: 1), capacity: capacity)
    return buffer.pointee.storage
}

/// Copies `message` and `output` into the thread's buffer and points `outcome` at them. The
/// strings are read in place (native strings are contiguous): no copy of the `String` values.
@inline(__always)
private func fill(
    _ outcome: UnsafeMutablePointer<th_outcome>, message: String?, output: String?,
    key: pthread_key_t
) {
    let messageCount = message?.utf8.count ?? 0
    let outputCount = output?.utf8.count ?? 0
    let base = threadBuffer(key, count: messageCount + outputCount)
    if let message { copyUTF8(message, to: base) }
    if let output { copyUTF8(output, to: base + messageCount) }
    let text = base.assumingMemoryBound(to: CChar.self)
    if message != nil { outcome.pointee.message = th_str(ptr: text, len: UInt64(messageCount)) }
    if output != nil { outcome.pointee.output = th_str(ptr: text + messageCount, len: UInt64(outputCount)) }
}

@inline(__always)
private func copyUTF8(_ text: String, to destination: UnsafeMutableRawPointer) {
    let copied: Void? = text.utf8.withContiguousStorageIfAvailable {
        destination.copyMemory(from: $0.baseAddress!, byteCount: $0.count)
    }
    if copied == nil {
        for (offset, byte) in text.utf8.enumerated() {
            destination.storeBytes(of: byte, toByteOffset: offset, as: UInt8.self)
        }
    }
}

private let validateThunk: @convention(c) (th_str, th_message_buffer) -> Int32 = { config, error in
    guard let factory = Registry.shared.current else { return TH_ERROR }
    if let message = factory.validate(decodedString(config)) {
        write(message, to: error)
        return TH_INVALID_CONFIG
    }
    return TH_OK
}

private let createThunk:
    @convention(c) (
        UnsafePointer<th_host_api>?, th_str, UnsafeMutablePointer<UnsafeMutableRawPointer?>?, th_message_buffer
    ) -> Int32 = { host, config, instanceOut, errorBuffer in
        guard let factory = Registry.shared.current, let host, let instanceOut else { return TH_ERROR }
        let json = config.len == 0 ? "{}" : decodedString(config)
        do {
            instanceOut.pointee = Unmanaged.passRetained(try factory.create(json, host: host)).toOpaque()
            return TH_OK
        } catch {
            let (status, message, _) = status(for: error)
            write(message, to: errorBuffer)
            return status == TH_INVALID_CONFIG ? TH_INVALID_CONFIG : TH_ERROR
        }
    }

private let destroyThunk: @convention(c) (UnsafeMutableRawPointer?) -> Void = { instance in
    guard let instance else { return }
    Unmanaged<InstanceBox>.fromOpaque(instance).release()
}

private let executeThunk:
    @convention(c) (
        UnsafeMutableRawPointer?, UnsafePointer<th_task>?, OpaquePointer?, UnsafeMutablePointer<th_outcome>?
    ) -> Int32 = { instance, task, token, outcome in
        guard let instance, let task, let outcome else { return TH_ERROR }
        return Unmanaged<InstanceBox>.fromOpaque(instance)._withUnsafeGuaranteedRef { box in
            box.execute(task, token, outcome)
        }
    }

/// One call of the plugin. The inline path is kept free of the asynchronous one: a function that
/// can start a `Task` sets up its frame for it (metadata lookups, dynamic stack space) on every
/// call, so the error and deferred paths are functions of their own.
@inline(__always)
private func execute<P: TaskHostPlugin>(
    _ plugin: P, _ box: InstanceBox, _ task: UnsafePointer<th_task>, _ token: OpaquePointer?,
    _ outcome: UnsafeMutablePointer<th_outcome>
) -> Int32 {
    let result: ImmediateResult
    do {
        result = try plugin.executeImmediately(BorrowedTask(task))
    } catch {
        return failed(error, outcome, key: box.bufferKey)
    }
    guard case .finished(let output) = result else { return start(plugin, box, task, token) }
    if let output { fill(outcome, message: nil, output: output, key: box.bufferKey) }
    return TH_OK
}

/// A thrown error's status, its message copied into the thread's buffer.
@inline(never)
private func failed(_ error: any Error, _ outcome: UnsafeMutablePointer<th_outcome>, key: pthread_key_t) -> Int32 {
    let (status, message, retryAfter) = status(for: error)
    outcome.pointee.retry_after_ms = retryAfter
    fill(outcome, message: message, output: nil, key: key)
    return status
}

/// Starts ``TaskHostPlugin/execute(_:)`` in a `Task` with an owned copy of the task, and answers
/// `TH_PENDING`; the `Task` completes the token.
@inline(never)
private func start<P: TaskHostPlugin>(
    _ plugin: P, _ box: InstanceBox, _ task: UnsafePointer<th_task>, _ token: OpaquePointer?
) -> Int32 {
    guard let token else { return TH_ERROR }
    let pluginTask = BorrowedTask(task).owned()
    let tokenBits = UInt(bitPattern: UnsafeRawPointer(token))
    let work = Task(executorPreference: PluginThreads.shared) {
        var result = th_outcome()
        result.struct_size = UInt32(MemoryLayout<th_outcome>.size)
        result.retry_after_ms = -1
        var message = ""
        var output = ""
        do {
            output = try await plugin.execute(pluginTask) ?? ""
            result.status = TH_OK
        } catch {
            let mapped = status(for: error)
            (result.status, message, result.retry_after_ms) = mapped
        }
        box.finished(tokenBits)
        message.withUTF8 { message in
            output.withUTF8 { output in
                result.message = th_str(message)
                result.output = th_str(output)
                box.host.pointee.complete(
                    box.host.pointee.host_context, OpaquePointer(bitPattern: tokenBits), &result)
            }
        }
    }
    box.track(tokenBits, work)
    return TH_PENDING
}

private let cancelThunk: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?) -> Void = { instance, token in
    guard let instance, let token else { return }
    let box = Unmanaged<InstanceBox>.fromOpaque(instance).takeUnretainedValue()
    box.cancel(UInt(bitPattern: UnsafeRawPointer(token)))
}

/// Allocated once, never freed or written after initialization.
private nonisolated(unsafe) let cancelCapability: UnsafeMutablePointer<th_cancel_v1> = {
    let capability = UnsafeMutablePointer<th_cancel_v1>.allocate(capacity: 1)
    capability.initialize(
        to: th_cancel_v1(struct_size: UInt32(MemoryLayout<th_cancel_v1>.size), reserved0: 0, cancel: cancelThunk))
    return capability
}()

private let capabilityThunk: @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<CChar>?) -> UnsafeRawPointer? = {
    _, id in
    guard let id, String(cString: id) == TH_CAPABILITY_CANCEL_V1 else { return nil }
    return UnsafeRawPointer(cancelCapability)
}
