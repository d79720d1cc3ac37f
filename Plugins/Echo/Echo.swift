// An executor plugin written with the Swift SDK: the template for Swift plugin authors.
// It answers each task with its payload (optionally prefixed); a task whose payload equals
// `failOn` fails with a retryable error; `delayMs` makes every execution asynchronous; `quiet`
// answers nothing and reads nothing, which leaves the SDK's own cost per call (taskhost-bench P7).
import TaskHostPluginSDK

struct Echo: TaskHostPlugin {
    struct Configuration: Decodable, Sendable {
        var prefix: String?
        var failOn: String?
        var delayMs: Int?
        var quiet: Bool?
    }

    static let name = "echo"
    static let version = "1.0.0"
    static let summary: String? = "Answers each task with its payload; a template for Swift plugins."
    static let configSchema: String? = """
        {"type":"object","additionalProperties":false,"properties":{\
        "prefix":{"type":"string"},"failOn":{"type":"string"},"delayMs":{"type":"integer","minimum":0},\
        "quiet":{"type":"boolean"}}}
        """

    let configuration: Configuration

    static func validate(_ configuration: Configuration) throws {
        if let delay = configuration.delayMs, delay < 0 {
            throw PluginExecutionError.invalidConfiguration("key 'delayMs': expected 0 or more, got \(delay)")
        }
    }

    init(configuration: Configuration, host: PluginHost) throws {
        self.configuration = configuration
    }

    func executeImmediately(_ task: PluginTask) throws -> ImmediateResult {
        guard (configuration.delayMs ?? 0) == 0 else { return .deferred }
        if configuration.quiet == true { return .finished(output: nil) }
        return .finished(output: try answer(task))
    }

    func execute(_ task: PluginTask) async throws -> String? {
        try await Task.sleep(for: .milliseconds(configuration.delayMs ?? 0))
        return try answer(task)
    }

    private func answer(_ task: PluginTask) throws -> String {
        if task.payload == configuration.failOn {
            throw PluginExecutionError.retryable("asked to fail on \(task.payload)")
        }
        return configuration.prefix.map { $0 + task.payload } ?? task.payload
    }
}

@_cdecl("taskhost_plugin_entry")
public func taskhostPluginEntry() -> UnsafeRawPointer { exportPlugin(Echo.self) }
