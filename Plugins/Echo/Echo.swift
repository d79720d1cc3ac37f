// An executor plugin written with the Swift SDK: the template for Swift plugin authors.
// It answers each task with its payload (optionally prefixed); a task whose payload equals
// `failOn` fails with a retryable error; `delayMs` makes every execution asynchronous; `quiet`
// answers nothing and reads nothing, which leaves the SDK's own cost per call (taskhost-bench P7);
// `describe` answers what the host passed (target, id, sequence, attempt, payload) as JSON;
// `blockMs` blocks the thread for that long in `execute`, as a plugin calling a blocking library
// would (the SDK runs it on threads of its own, so the host's timeouts still fire).
import FoundationEssentials
import Glibc
import TaskHostPluginSDK

struct Echo: TaskHostPlugin {
    struct Configuration: Decodable, Sendable {
        var prefix: String?
        var failOn: String?
        var delayMs: Int?
        var quiet: Bool?
        var describe: Bool?
        var blockMs: Int?
    }

    /// The task as the host passed it, for `describe`.
    struct Description: Encodable {
        var targetId: String
        var targetInteger: Int64?
        var id: String?
        var sequence: UInt64
        var attempt: Int
        var payload: String
        var async: Bool
        /// Milliseconds left before the attempt's deadline; nil without a timeout.
        var remainingMs: Int64?
    }

    static let name = "echo"
    static let version = "1.0.0"
    static let summary: String? = "Answers each task with its payload; a template for Swift plugins."
    static let configSchema: String? = """
        {"type":"object","additionalProperties":false,"properties":{\
        "prefix":{"type":"string"},"failOn":{"type":"string"},"delayMs":{"type":"integer","minimum":0},\
        "quiet":{"type":"boolean"},"describe":{"type":"boolean"},"blockMs":{"type":"integer","minimum":0}}}
        """

    let configuration: Configuration

    static func validate(_ configuration: Configuration) throws {
        if let delay = configuration.delayMs, delay < 0 {
            throw PluginExecutionError.invalidConfiguration("key 'delayMs': expected 0 or more, got \(delay)")
        }
        if let block = configuration.blockMs, block < 0 {
            throw PluginExecutionError.invalidConfiguration("key 'blockMs': expected 0 or more, got \(block)")
        }
    }

    init(configuration: Configuration, host: PluginHost) throws {
        self.configuration = configuration
    }

    func executeImmediately(_ task: borrowing BorrowedTask) throws -> ImmediateResult {
        guard (configuration.delayMs ?? 0) == 0, (configuration.blockMs ?? 0) == 0 else { return .deferred }
        if configuration.quiet == true { return .finished(output: nil) }
        if configuration.describe == true {
            return .finished(
                output: try describe(
                    Description(
                        targetId: task.targetId, targetInteger: task.targetInteger, id: task.id,
                        sequence: task.sequence, attempt: task.attempt, payload: task.payload, async: false,
                        remainingMs: task.timeRemaining.map(Self.milliseconds))))
        }
        return .finished(output: try answer(task.payload))
    }

    func execute(_ task: PluginTask) async throws -> String? {
        if let block = configuration.blockMs, block > 0 { usleep(UInt32(clamping: block * 1000)) }
        try await Task.sleep(for: .milliseconds(configuration.delayMs ?? 0))
        if configuration.describe == true {
            return try describe(
                Description(
                    targetId: task.targetId, targetInteger: task.targetInteger, id: task.id, sequence: task.sequence,
                    attempt: task.attempt, payload: task.payload, async: true,
                    remainingMs: task.timeRemaining.map(Self.milliseconds)))
        }
        return try answer(task.payload)
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }

    private func describe(_ description: Description) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: try encoder.encode(description), as: UTF8.self)
    }

    private func answer(_ payload: String) throws -> String {
        if payload == configuration.failOn {
            throw PluginExecutionError.retryable("asked to fail on \(payload)")
        }
        return configuration.prefix.map { $0 + payload } ?? payload
    }
}

@_cdecl("taskhost_plugin_entry")
public func taskhostPluginEntry() -> UnsafeRawPointer { exportPlugin(Echo.self) }
