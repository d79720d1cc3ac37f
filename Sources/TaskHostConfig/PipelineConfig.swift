import Foundation
import TaskHostJSON
import TaskHostScheduler
import TaskHostStore
import Yams

/// A pipeline, as its configuration file describes it.
package struct PipelineConfig: Sendable {
    package var file: String
    package var maxConcurrency: Int?
    package var bufferSize: Int
    package var executors: [ExecutorConfig]
    package var sources: [SourceConfig]
    package var retry: RetryPolicy
    package var timeout: Duration?
    package var onExhausted: ExhaustedPolicy
    package var results: String?
    package var deadLetter: String?
    package var metricsListen: String?
    package var pluginPath: [String]
    package var gracePeriod: Duration
    /// The durable queue between the sources and the scheduler; nil for `queue: memory` and for
    /// `queue: { postgres: … }`.
    package var queue: QueueSettings?
    package var queueLocation: Location?
    /// The shared queue on PostgreSQL (`queue: { postgres: … }`), for many hosts on one database;
    /// nil otherwise (then ``queue`` says which queue the pipeline has).
    package var postgres: PostgresQueueSettings? = nil
    /// A cap on running tasks across all hosts of one PostgreSQL queue (`scheduler.globalMaxConcurrency`).
    package var globalMaxConcurrency: Int? = nil

    /// Which queue the pipeline has.
    package enum QueueKind: Sendable {
        case memory
        case sqlite(QueueSettings)
        case postgres(PostgresQueueSettings)
    }

    package var queueKind: QueueKind {
        if let postgres { return .postgres(postgres) }
        if let queue { return .sqlite(queue) }
        return .memory
    }

    /// Where a value came from, for later errors (a plugin refusing its configuration).
    package struct Location: Sendable, Equatable {
        package var line: Int?
        package var column: Int?
        package var key: String
    }
}

/// `queue: { postgres: { url, leaseMs, schema } }`: the shared queue on PostgreSQL.
package struct PostgresQueueSettings: Sendable, Equatable {
    /// `postgres://user:password@host:port/database` (`${VAR}` replaced from the environment).
    package var url: String
    /// How long a host's lease lasts without a renewal (on the database's clock); past it, another
    /// host takes its targets back.
    package var lease: Duration = .seconds(30)
    /// The PostgreSQL schema that holds the queue's tables.
    package var schema: String = "taskhost"

    package static let minimumLeaseMs = 1000

    package init(url: String, lease: Duration = .seconds(30), schema: String = "taskhost") {
        self.url = url
        self.lease = lease
        self.schema = schema
    }
}

package struct ExecutorConfig: Sendable {
    package enum Kind: Sendable {
        /// A plugin by name or path, with its configuration as JSON.
        case plugin(reference: String, configuration: String)
        /// A plain C function called through libffi.
        case function(library: String, symbol: String, signature: String, arguments: [String])
    }

    package var name: String
    package var kind: Kind
    /// A cap for this executor's tasks, below the scheduler's.
    package var maxConcurrency: Int?
    /// Where the executor's configuration is (its `config`, or the executor itself).
    package var location: PipelineConfig.Location
    /// Where the plugin is named (`plugin`), for a plugin that cannot be loaded.
    package var referenceLocation: PipelineConfig.Location?
    /// Where a function executor's `library`, `function` and `arguments` are, for an error of one
    /// of them (``location`` is its `signature`).
    package var partLocations: [String: PipelineConfig.Location] = [:]
}

package struct SourceConfig: Sendable {
    package enum Kind: String, Sendable, CaseIterable {
        case file, stdin, directory, http, interval
    }

    /// Where a source's tasks come from: one case per kind, with that kind's settings.
    package enum Input: Sendable {
        /// A JSON Lines file, read once or followed as it grows.
        case file(path: String, follow: Bool)
        /// Standard input, as JSON Lines.
        case stdin
        /// A spool folder: each file is a batch, moved to done/ or failed/ once its tasks are final.
        case directory(path: String)
        /// POSTed JSON Lines, answered with each task's id.
        case http(listen: String, token: String?, maxBodyBytes: Int)
        /// A task template emitted on a schedule, `count` times (nil: forever).
        case interval(schedule: Schedule, template: String, count: Int?)

        package var kind: Kind {
            switch self {
            case .file: .file
            case .stdin: .stdin
            case .directory: .directory
            case .http: .http
            case .interval: .interval
            }
        }
    }

    /// When an interval source emits its template.
    package enum Schedule: Sendable {
        case every(Duration)
        case cron(CronSchedule)
    }

    package var name: String
    package var input: Input
    /// The executor of tasks that match no route (or of all tasks when there is no `match`).
    package var executor: String?
    package var targetId: JSONPath
    package var match: Match?
    package var maxTaskBytes: Int
    package var location: PipelineConfig.Location

    package var kind: Kind { input.kind }

    package struct Match: Sendable {
        package var field: JSONPath
        /// Field value (as text) to executor name.
        package var routes: [String: String]
    }
}

/// Reads a pipeline configuration file: YAML, or JSON (a subset of YAML).
package enum ConfigLoader {
    package static let topKeys = [
        "scheduler", "executors", "sources", "retry", "timeoutMs", "onExhausted", "results", "deadLetter", "metrics",
        "pluginPath", "shutdown", "queue",
    ]

    /// Loads and checks `path`. Environment references `${NAME}` are replaced from `environment`.
    package static func load(path: String, environment: [String: String]) throws(ConfigError) -> PipelineConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(
                file: path, line: nil, column: nil, key: "",
                message: "cannot read the file (\(error.localizedDescription))",
                hint: "check the path")
        }
        return try parse(text, file: path, environment: environment)
    }

    package static func parse(_ text: String, file: String, environment: [String: String]) throws(ConfigError)
        -> PipelineConfig
    {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            if case .duplicatedKeysInMapping = error, let duplicate = duplicateKey(in: text, file: file) {
                throw duplicate
            }
            throw yamlError(error, file: file)
        } catch {
            throw ConfigError(file: file, line: nil, column: nil, key: "", message: "\(error)")
        }
        guard let root else {
            throw ConfigError(
                file: file, line: 1, column: 1, key: "", message: "the file is empty",
                hint: "a pipeline needs at least `executors:` and `sources:`")
        }
        let reader = ConfigReader(file: file, environment: environment)
        return try reader.pipeline(root)
    }

    /// The first duplicated key of `text` (which Yams refuses, naming only the first occurrence):
    /// the duplicate's line and column, its key path and the line of the first. Each occurrence
    /// Yams names is renamed to a placeholder until the text composes; the tree then shows where
    /// the other occurrence is. Nil when that fails (the caller reports Yams's error).
    static func duplicateKey(in text: String, file: String) -> ConfigError? {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        // Placeholder -> (the key's name, its line, its column).
        var renamed: [String: (name: String, line: Int, column: Int)] = [:]
        var root: Node?
        for round in 0..<64 {
            do {
                root = try Yams.compose(yaml: lines.joined(separator: "\n"))
                break
            } catch YamlError.duplicatedKeysInMapping(let duplicates, let context) {
                let (line, column) = (context.mark.line, context.mark.column)
                guard let name = duplicates.first, line >= 1, line <= lines.count else { return nil }
                let row = Array(lines[line - 1].unicodeScalars)
                guard column >= 1, column <= row.count else { return nil }
                // The key as written: plain, or in quotes.
                var start = column - 1
                if row[start] == "\"" || row[start] == "'" { start += 1 }
                let scalars = Array(name.unicodeScalars)
                guard start + scalars.count <= row.count, Array(row[start..<start + scalars.count]) == scalars else {
                    return nil
                }
                // A placeholder of the same length keeps the columns after it on that line.
                let placeholder =
                    String(
                        repeating: "\u{E000}", count: max(0, scalars.count - 1))
                    + String(Character(Unicode.Scalar(0xE100 + round)!))
                guard placeholder.unicodeScalars.count == scalars.count else { return nil }
                var view = String.UnicodeScalarView()
                view.append(contentsOf: row[..<start])
                view.append(contentsOf: placeholder.unicodeScalars)
                view.append(contentsOf: row[(start + scalars.count)...])
                lines[line - 1] = String(view)
                renamed[placeholder] = (name, line, column)
            } catch {
                return nil
            }
        }
        guard let root else { return nil }
        func search(_ node: Node, _ path: String) -> ConfigError? {
            switch node {
            case .mapping(let mapping):
                var first: [String: Int] = [:]
                for (keyNode, value) in mapping {
                    guard let written = keyNode.string else { continue }
                    let original = renamed[written]
                    let name = original?.name ?? written
                    let line = original?.line ?? keyNode.mark?.line ?? 0
                    let column = original?.column ?? keyNode.mark?.column
                    let keyPath = path.isEmpty ? name : "\(path).\(name)"
                    if let earlier = first[name] {
                        return ConfigError(
                            file: file, line: line, column: column, key: keyPath, message: "duplicate key '\(name)'",
                            hint: "first at line \(earlier); keep one")
                    }
                    first[name] = line
                    if let found = search(value, keyPath) { return found }
                }
            case .sequence(let sequence):
                for (index, value) in sequence.enumerated() {
                    if let found = search(value, "\(path)[\(index)]") { return found }
                }
            case .scalar, .alias:
                break
            }
            return nil
        }
        return search(root, "")
    }

    package static func yamlError(_ error: YamlError, file: String) -> ConfigError {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _):
            let what = [context?.text, problem].compactMap { $0 }.joined(separator: ": ")
            return ConfigError(
                file: file, line: mark.line, column: mark.column, key: "", message: "malformed YAML: \(what)",
                hint: "check the indentation and the quoting on that line")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return ConfigError(
                file: file, line: context.mark.line, column: context.mark.column, key: "",
                message: "duplicate key " + duplicates.map { "'\($0)'" }.joined(separator: ", "),
                hint: "this is the first of them; keep one")
        default:
            return ConfigError(file: file, line: nil, column: nil, key: "", message: "malformed YAML: \(error)")
        }
    }
}

/// Typed access to Yams nodes, with errors that name the file, line, column and key.
package struct ConfigReader {
    package let file: String
    package let environment: [String: String]

    package func fail(_ node: Node?, _ key: String, _ message: String, hint: String? = nil) -> ConfigError {
        ConfigError(
            file: file, line: node?.mark?.line, column: node?.mark?.column, key: key, message: message, hint: hint)
    }

    package func location(_ node: Node?, _ key: String) -> PipelineConfig.Location {
        PipelineConfig.Location(line: node?.mark?.line, column: node?.mark?.column, key: key)
    }

    /// The pairs of a mapping; unknown keys are errors with a suggestion.
    package func mapping(_ node: Node, _ key: String, allowed: [String]?) throws(ConfigError) -> [(
        key: String, node: Node
    )] {
        guard case .mapping(let mapping) = node else {
            throw fail(node, key, "expected a mapping (key: value lines), got \(describe(node))")
        }
        var seen = Set<String>()
        var pairs: [(key: String, node: Node)] = []
        for (keyNode, value) in mapping {
            guard let name = keyNode.string else { throw fail(keyNode, key, "a key must be a string") }
            let path = key.isEmpty ? name : "\(key).\(name)"
            guard seen.insert(name).inserted else {
                throw fail(keyNode, path, "duplicate key '\(name)'", hint: "keep one")
            }
            if let allowed, !allowed.contains(name) {
                let hint =
                    suggestion(for: name, among: allowed).map { "did you mean '\($0)'?" }
                    ?? "known keys: \(allowed.joined(separator: ", "))"
                throw fail(keyNode, path, "unknown key '\(name)'", hint: hint)
            }
            pairs.append((name, value))
        }
        return pairs
    }

    package func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): return "'\(scalar.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    /// A string scalar, with `${NAME}` replaced from the environment.
    package func string(_ node: Node, _ key: String) throws(ConfigError) -> String {
        guard case .scalar(let scalar) = node else { throw fail(node, key, "expected a string, got \(describe(node))") }
        return try substitute(scalar.string, node, key)
    }

    /// A path from the file: a relative one is relative to the file's folder, not to the folder
    /// taskhost runs in (a configuration in /etc/taskhost/ names its files beside it). Absolute
    /// paths and `-` (standard output) are kept as written.
    package func path(_ node: Node, _ key: String) throws(ConfigError) -> String {
        resolved(try string(node, key))
    }

    /// `path` relative to the file's folder, as ``path(_:_:)`` reads it.
    package func resolved(_ path: String) -> String {
        guard !path.isEmpty, !path.hasPrefix("/"), path != "-" else { return path }
        let folder = folderOf(file)
        guard !folder.isEmpty, folder != "." else { return path }
        return (folder.hasSuffix("/") ? folder : folder + "/")
            + (path.hasPrefix("./") ? String(path.dropFirst(2)) : path)
    }

    package func nonEmpty(_ node: Node, _ key: String, _ expected: String) throws(ConfigError) -> String {
        let text = try string(node, key)
        guard !text.isEmpty else { throw fail(node, key, "expected \(expected), got an empty string") }
        return text
    }

    package func substitute(_ text: String, _ node: Node, _ key: String) throws(ConfigError) -> String {
        guard text.contains("${") else { return text }
        var result = ""
        var rest = Substring(text)
        while let start = rest.firstRange(of: "${") {
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                throw fail(node, key, "unterminated ${ in '\(text)'", hint: "write ${NAME}")
            }
            let name = String(rest[start.upperBound..<end])
            guard let value = environment[name] else {
                throw fail(
                    node, key, "the environment variable \(name) is not set",
                    hint: "export \(name)=... before running, or remove the reference")
            }
            result += value
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }

    func int(_ node: Node, _ key: String, minimum: Int = Int.min) throws(ConfigError) -> Int {
        let text = try string(node, key)
        guard let value = Int(text) else { throw fail(node, key, "expected a whole number, got '\(text)'") }
        guard value >= minimum else { throw fail(node, key, "expected at least \(minimum), got \(value)") }
        return value
    }

    func bool(_ node: Node, _ key: String) throws(ConfigError) -> Bool {
        let text = try string(node, key)
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw fail(node, key, "expected true or false, got '\(text)'")
        }
    }

    func double(_ node: Node, _ key: String) throws(ConfigError) -> Double {
        let text = try string(node, key)
        guard let value = Double(text) else { throw fail(node, key, "expected a number, got '\(text)'") }
        return value
    }

    func choice<T: RawRepresentable>(_ node: Node, _ key: String, _ type: T.Type, _ cases: [T]) throws(ConfigError) -> T
    where T.RawValue == String {
        let text = try string(node, key)
        if let value = T(rawValue: text) { return value }
        let names = cases.map(\.rawValue)
        let hint = suggestion(for: text, among: names).map { "did you mean '\($0)'?" }
        throw fail(node, key, "expected one of \(names.joined(separator: ", ")), got '\(text)'", hint: hint)
    }

    func jsonPath(_ node: Node, _ key: String) throws(ConfigError) -> JSONPath {
        let text = try string(node, key)
        do {
            return try JSONPath(parsing: text)
        } catch {
            throw fail(node, key, error.description)
        }
    }

    /// A node as JSON text (for a plugin's configuration or a task template).
    func json(_ node: Node, _ key: String) throws(ConfigError) -> String {
        switch node {
        case .mapping(let mapping):
            var parts: [String] = []
            for (keyNode, value) in mapping {
                guard let name = keyNode.string else { throw fail(keyNode, key, "a key must be a string") }
                parts.append(quote(name) + ":" + (try json(value, "\(key).\(name)")))
            }
            return "{" + parts.joined(separator: ",") + "}"
        case .sequence(let sequence):
            var parts: [String] = []
            for (index, value) in sequence.enumerated() { parts.append(try json(value, "\(key)[\(index)]")) }
            return "[" + parts.joined(separator: ",") + "]"
        case .scalar(let scalar):
            let text = try substitute(scalar.string, node, key)
            if scalar.style == .plain {
                if text == "null" || text == "~" || text.isEmpty { return "null" }
                if text == "true" || text == "false" { return text }
                if Int64(text) != nil { return text }
                if let number = Double(text), number.isFinite, text.first != "." { return text }
            }
            return quote(text)
        case .alias:
            throw fail(node, key, "aliases are not supported here")
        }
    }

    // MARK: The sections

    func pipeline(_ root: Node) throws(ConfigError) -> PipelineConfig {
        let top = try mapping(root, "", allowed: ConfigLoader.topKeys)
        func section(_ name: String) -> Node? { top.first { $0.key == name }?.node }

        var maxConcurrency: Int?
        var bufferSize = 10_000
        var globalMaxConcurrency: (Int, Node)?
        if let node = section("scheduler") {
            for (key, value) in try mapping(
                node, "scheduler", allowed: ["maxConcurrency", "bufferSize", "globalMaxConcurrency"])
            {
                switch key {
                case "maxConcurrency": maxConcurrency = try int(value, "scheduler.maxConcurrency", minimum: 1)
                case "globalMaxConcurrency":
                    globalMaxConcurrency = (try int(value, "scheduler.globalMaxConcurrency", minimum: 1), value)
                default: bufferSize = try int(value, "scheduler.bufferSize", minimum: 1)
                }
            }
        }

        var pluginPath: [String] = []
        if let node = section("pluginPath") {
            if case .sequence(let items) = node {
                for (index, item) in items.enumerated() { pluginPath.append(try path(item, "pluginPath[\(index)]")) }
            } else {
                pluginPath = [try path(node, "pluginPath")]
            }
        }

        guard let executorsNode = section("executors") else {
            throw fail(root, "executors", "missing section", hint: "name at least one executor: a plugin or a function")
        }
        var executors: [ExecutorConfig] = []
        for (name, node) in try mapping(executorsNode, "executors", allowed: nil) {
            executors.append(try executor(name, node))
        }
        guard !executors.isEmpty else { throw fail(executorsNode, "executors", "no executor defined") }

        guard let sourcesNode = section("sources") else {
            throw fail(root, "sources", "missing section", hint: "name at least one source of tasks")
        }
        var sources: [SourceConfig] = []
        let executorNames = executors.map(\.name)
        for (name, node) in try mapping(sourcesNode, "sources", allowed: nil) {
            sources.append(try source(name, node, executors: executorNames))
        }
        guard !sources.isEmpty else { throw fail(sourcesNode, "sources", "no source defined") }

        var retry = RetryPolicy.none
        if let node = section("retry") { retry = try retryPolicy(node) }
        var timeout: Duration?
        if let node = section("timeoutMs") { timeout = .milliseconds(try int(node, "timeoutMs", minimum: 1)) }
        var onExhausted = ExhaustedPolicy.deadLetter
        if let node = section("onExhausted") {
            onExhausted = try choice(node, "onExhausted", ExhaustedPolicy.self, [.deadLetter, .park])
        }
        var results: String?
        var deadLetter: String?
        for (name, node) in [("results", section("results")), ("deadLetter", section("deadLetter"))] {
            guard let node else { continue }
            let pairs = try mapping(node, name, allowed: ["path"])
            guard let path = pairs.first?.node else {
                throw fail(node, name, "missing key 'path'", hint: "a file, or - for standard output")
            }
            if name == "results" {
                results = try self.path(path, "\(name).path")
            } else {
                deadLetter = try self.path(path, "\(name).path")
            }
        }
        var metricsListen: String?
        if let node = section("metrics") {
            for (_, value) in try mapping(node, "metrics", allowed: ["listen"]) {
                metricsListen = try address(value, "metrics.listen")
            }
        }
        var gracePeriod = Duration.seconds(10)
        if let node = section("shutdown") {
            for (_, value) in try mapping(node, "shutdown", allowed: ["gracePeriodMs"]) {
                gracePeriod = .milliseconds(try int(value, "shutdown.gracePeriodMs", minimum: 0))
            }
        }
        let queueNode = section("queue")
        let (queue, postgres) = try queue(queueNode)
        if let (_, node) = globalMaxConcurrency, postgres == nil {
            throw fail(
                node, "scheduler.globalMaxConcurrency", "a global cap needs the shared queue on PostgreSQL",
                hint:
                    "with one host, scheduler.maxConcurrency is the cap; for many hosts use queue: { postgres: { url } }"
            )
        }
        var config = PipelineConfig(
            file: file, maxConcurrency: maxConcurrency, bufferSize: bufferSize, executors: executors, sources: sources,
            retry: retry, timeout: timeout, onExhausted: onExhausted, results: results, deadLetter: deadLetter,
            metricsListen: metricsListen, pluginPath: pluginPath, gracePeriod: gracePeriod,
            queue: queue, queueLocation: queueNode.map { location($0, "queue") })
        config.postgres = postgres
        config.globalMaxConcurrency = globalMaxConcurrency?.0
        return config
    }

    /// `queue: memory`, `queue: durable`, `queue: { path, synchronous, retainFinishedMs,
    /// maxSizeMB, dedupWindowMs }` (SQLite), or `queue: { postgres: { url, leaseMs, schema } }`. The
    /// default is durable, in `.taskhost/<name>/queue.db` beside the file.
    func queue(_ node: Node?) throws(ConfigError) -> (QueueSettings?, PostgresQueueSettings?) {
        var settings = QueueSettings(path: QueueSettings.defaultPath(forConfig: file))
        guard let node else { return (settings, nil) }
        if case .scalar(let scalar) = node {
            switch scalar.string {
            case "memory": return (nil, nil)
            case "durable": return (settings, nil)
            default:
                throw fail(
                    node, "queue", "expected memory, durable or a mapping, got '\(scalar.string)'",
                    hint: "queue: memory keeps tasks in memory only (lost on a crash); the default is durable")
            }
        }
        let pairs = try mapping(
            node, "queue",
            allowed: ["path", "synchronous", "retainFinishedMs", "maxSizeMB", "dedupWindowMs", "postgres"])
        if let postgres = pairs.first(where: { $0.key == "postgres" }) {
            if let other = pairs.first(where: { $0.key != "postgres" }) {
                throw fail(
                    other.node, "queue.\(other.key)",
                    "'\(other.key)' belongs to the SQLite queue, not to queue.postgres",
                    hint: "remove it, or remove postgres to keep the queue in a SQLite file")
            }
            return (nil, try postgresQueue(postgres.node))
        }
        for (key, value) in pairs {
            switch key {
            case "path": settings.path = try path(value, "queue.path")
            case "synchronous":
                settings.synchronous = try choice(
                    value, "queue.synchronous", QueueSettings.Synchronous.self, QueueSettings.Synchronous.allCases)
            case "retainFinishedMs":
                settings.retainFinished = .milliseconds(try int(value, "queue.retainFinishedMs", minimum: 0))
            case "dedupWindowMs":
                settings.dedupWindow = .milliseconds(try int(value, "queue.dedupWindowMs", minimum: 0))
            default: settings.maxSizeMB = try int(value, "queue.maxSizeMB", minimum: 1)
            }
        }
        return (settings, nil)
    }

    /// `postgres: { url, leaseMs, schema }` under `queue`.
    func postgresQueue(_ node: Node) throws(ConfigError) -> PostgresQueueSettings {
        let pairs = try mapping(node, "queue.postgres", allowed: ["url", "leaseMs", "schema"])
        guard let urlNode = pairs.first(where: { $0.key == "url" })?.node else {
            throw fail(
                node, "queue.postgres", "missing key 'url'",
                hint: "url: \"${DATABASE_URL}\" with DATABASE_URL=postgres://user:password@host:5432/database")
        }
        let url = try string(urlNode, "queue.postgres.url")
        guard url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") else {
            throw fail(
                urlNode, "queue.postgres.url", "expected a postgres:// URL",
                hint: "postgres://user:password@host:5432/database")
        }
        var settings = PostgresQueueSettings(url: url)
        for (key, value) in pairs {
            switch key {
            case "leaseMs":
                settings.lease = .milliseconds(
                    try int(value, "queue.postgres.leaseMs", minimum: PostgresQueueSettings.minimumLeaseMs))
            case "schema":
                let schema = try string(value, "queue.postgres.schema")
                guard let first = schema.unicodeScalars.first, schema.count <= 63,
                    first == "_" || ("a"..."z").contains(first),
                    schema.unicodeScalars.allSatisfy({
                        $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0)
                    })
                else {
                    throw fail(
                        value, "queue.postgres.schema",
                        "expected a lowercase name of letters, digits and underscores, got '\(schema)'",
                        hint: "the default is taskhost")
                }
                settings.schema = schema
            default: break
            }
        }
        return settings
    }

    func executor(_ name: String, _ node: Node) throws(ConfigError) -> ExecutorConfig {
        let key = "executors.\(name)"
        let pairs = try mapping(
            node, key, allowed: ["plugin", "config", "maxConcurrency", "library", "function", "signature", "arguments"])
        func value(_ name: String) -> Node? { pairs.first { $0.key == name }?.node }
        if let plugin = value("plugin") {
            if let extra = ["library", "function", "signature", "arguments"].first(where: { value($0) != nil }) {
                throw fail(value(extra), "\(key).\(extra)", "'\(extra)' belongs to function executors, not plugins")
            }
            let configuration =
                try value("config").map { node throws(ConfigError) in try json(node, "\(key).config") } ?? "{}"
            return ExecutorConfig(
                name: name,
                kind: .plugin(reference: try pluginReference(plugin, "\(key).plugin"), configuration: configuration),
                maxConcurrency: try cap(value("maxConcurrency"), key),
                location: location(value("config") ?? plugin, "\(key).config"),
                referenceLocation: location(plugin, "\(key).plugin"))
        }
        guard let library = value("library") else {
            throw fail(node, key, "an executor needs 'plugin' (a plugin name or .so path) or 'library' and 'function'")
        }
        guard let function = value("function") else {
            throw fail(node, "\(key).function", "missing key 'function'", hint: "the exported C function to call")
        }
        guard let signature = value("signature") else {
            throw fail(node, "\(key).signature", "missing key 'signature'", hint: "like \"int32(string, int64)\"")
        }
        var arguments: [String] = []
        if let list = value("arguments") {
            guard case .sequence(let items) = list else {
                throw fail(list, "\(key).arguments", "expected a list of JSON paths, like [\"$.data.sku\"]")
            }
            for (index, item) in items.enumerated() { arguments.append(try string(item, "\(key).arguments[\(index)]")) }
        }
        return ExecutorConfig(
            name: name,
            kind: .function(
                library: libraryReference(
                    try nonEmpty(library, "\(key).library", "a library name (like pricing) or the path of its .so")),
                symbol: try nonEmpty(function, "\(key).function", "the exported C function to call"),
                signature: try string(signature, "\(key).signature"), arguments: arguments),
            maxConcurrency: try cap(value("maxConcurrency"), key),
            location: location(signature, "\(key).signature"),
            partLocations: [
                "library": location(library, "\(key).library"), "function": location(function, "\(key).function"),
                "arguments": location(value("arguments") ?? signature, "\(key).arguments"),
            ])
    }

    /// A plugin given as a path (with a `/`, or ending in `.so`) is relative to the file's folder;
    /// a name is looked up on the search path.
    private func pluginReference(_ node: Node, _ key: String) throws(ConfigError) -> String {
        let reference = try string(node, key)
        return reference.contains("/") || reference.hasSuffix(".so") ? resolved(reference) : reference
    }

    /// A library given as a path (with a `/`) is relative to the file's folder; a name (`pricing`,
    /// `libm.so.6`) is looked up on the search path, then by the system's loader.
    private func libraryReference(_ library: String) -> String {
        library.contains("/") ? resolved(library) : library
    }

    private func cap(_ node: Node?, _ key: String) throws(ConfigError) -> Int? {
        guard let node else { return nil }
        return try int(node, "\(key).maxConcurrency", minimum: 1)
    }

    func source(_ name: String, _ node: Node, executors: [String]) throws(ConfigError) -> SourceConfig {
        let key = "sources.\(name)"
        let pairs = try mapping(
            node, key,
            allowed: [
                "kind", "path", "executor", "targetId", "match", "follow", "listen", "token", "maxBodyBytes",
                "maxTaskBytes", "periodMs", "cron", "timezone", "template", "count",
            ])
        func value(_ name: String) -> Node? { pairs.first { $0.key == name }?.node }
        guard let kindNode = value("kind") else {
            throw fail(node, "\(key).kind", "missing key 'kind'", hint: "one of file, stdin, directory, http, interval")
        }
        let kind = try choice(kindNode, "\(key).kind", SourceConfig.Kind.self, SourceConfig.Kind.allCases)
        func executorName(_ node: Node, _ path: String) throws(ConfigError) -> String {
            let name = try string(node, path)
            guard executors.contains(name) else {
                let hint =
                    suggestion(for: name, among: executors).map { "did you mean '\($0)'?" }
                    ?? "defined executors: \(executors.joined(separator: ", "))"
                throw fail(node, path, "unknown executor '\(name)'", hint: hint)
            }
            return name
        }
        var source = SourceConfig(
            name: name, input: .stdin, executor: nil, targetId: JSONPath.targetId, match: nil, maxTaskBytes: 1 << 20,
            location: location(node, key))
        if let node = value("executor") { source.executor = try executorName(node, "\(key).executor") }
        if let node = value("targetId") { source.targetId = try jsonPath(node, "\(key).targetId") }
        if let node = value("match") {
            let matchPairs = try mapping(node, "\(key).match", allowed: ["field", "routes"])
            guard let field = matchPairs.first(where: { $0.key == "field" })?.node else {
                throw fail(node, "\(key).match.field", "missing key 'field'", hint: "a JSON path like $.data.kind")
            }
            guard let routesNode = matchPairs.first(where: { $0.key == "routes" })?.node else {
                throw fail(node, "\(key).match.routes", "missing key 'routes'", hint: "value: executor pairs")
            }
            var routes: [String: String] = [:]
            for (value, executorNode) in try mapping(routesNode, "\(key).match.routes", allowed: nil) {
                routes[value] = try executorName(executorNode, "\(key).match.routes.\(value)")
            }
            source.match = SourceConfig.Match(field: try jsonPath(field, "\(key).match.field"), routes: routes)
        }
        guard source.executor != nil || source.match != nil else {
            throw fail(
                node, "\(key).executor", "missing key 'executor'", hint: "name the executor of this source's tasks")
        }
        if let node = value("maxTaskBytes") { source.maxTaskBytes = try int(node, "\(key).maxTaskBytes", minimum: 1) }
        // The keys of this kind only: a key of another kind is an error, not silently ignored.
        let own = Set(Self.sourceKeys[kind] ?? [])
        for (name, other) in pairs where !Self.commonSourceKeys.contains(name) && !own.contains(name) {
            let owners = Self.sourceKeys.filter { $0.value.contains(name) }.map(\.key.rawValue).sorted()
            throw fail(
                other, "\(key).\(name)", "'\(name)' is not a key of a \(kind.rawValue) source",
                hint: "it belongs to \(owners.joined(separator: " and ")) sources; a \(kind.rawValue) source takes "
                    + (Self.commonSourceKeys.dropFirst() + (Self.sourceKeys[kind] ?? [])).joined(separator: ", "))
        }
        func required(_ name: String, _ hint: String) throws(ConfigError) -> Node {
            guard let found = value(name) else {
                throw fail(node, "\(key).\(name)", "missing key '\(name)'", hint: hint)
            }
            return found
        }
        switch kind {
        case .file:
            let path = try self.path(try required("path", "the JSON Lines file to read"), "\(key).path")
            let follow =
                try value("follow").map { node throws(ConfigError) in try bool(node, "\(key).follow") } ?? false
            source.input = .file(path: path, follow: follow)
        case .directory:
            source.input = .directory(path: try path(try required("path", "the spool folder to read"), "\(key).path"))
        case .http:
            let listen = try address(try required("listen", "an address like 127.0.0.1:8080"), "\(key).listen")
            let token = try value("token").map { node throws(ConfigError) in try string(node, "\(key).token") }
            let maxBody =
                try value("maxBodyBytes").map { node throws(ConfigError) in
                    try int(node, "\(key).maxBodyBytes", minimum: 1)
                } ?? 10 << 20
            source.input = .http(listen: listen, token: token, maxBodyBytes: maxBody)
        case .interval:
            let template = try json(try required("template", "the task to emit, as a mapping"), "\(key).template")
            let schedule: SourceConfig.Schedule
            switch (value("periodMs"), value("cron")) {
            case (let period?, nil):
                schedule = .every(.milliseconds(try int(period, "\(key).periodMs", minimum: 1)))
            case (nil, let cron?):
                let text = try string(cron, "\(key).cron")
                let zone = try value("timezone").map { node throws(ConfigError) in
                    try timeZone(node, "\(key).timezone")
                }
                do {
                    schedule = .cron(try CronSchedule(parsing: text, timeZone: zone ?? TimeZone(identifier: "UTC")!))
                } catch {
                    throw fail(cron, "\(key).cron", error.description)
                }
            default:
                throw fail(node, "\(key).periodMs", "give exactly one of 'periodMs' and 'cron'")
            }
            if case .every = schedule, let zone = value("timezone") {
                throw fail(zone, "\(key).timezone", "a time zone applies to a 'cron' schedule only", hint: "remove it")
            }
            let count = try value("count").map { node throws(ConfigError) in try int(node, "\(key).count", minimum: 1) }
            source.input = .interval(schedule: schedule, template: template, count: count)
        case .stdin:
            source.input = .stdin
        }
        return source
    }

    /// Keys every source takes, and those of each kind.
    static let commonSourceKeys = ["kind", "executor", "targetId", "match", "maxTaskBytes"]
    static let sourceKeys: [SourceConfig.Kind: [String]] = [
        .file: ["path", "follow"], .stdin: [], .directory: ["path"], .http: ["listen", "token", "maxBodyBytes"],
        .interval: ["periodMs", "cron", "timezone", "template", "count"],
    ]

    /// An IANA time zone name (`Europe/Berlin`, `UTC`).
    func timeZone(_ node: Node, _ key: String) throws(ConfigError) -> TimeZone {
        let name = try string(node, key)
        if let zone = TimeZone(identifier: name) { return zone }
        let hint =
            suggestion(for: name, among: TimeZone.knownTimeZoneIdentifiers).map { "did you mean '\($0)'?" }
            ?? "an IANA name like Europe/Berlin, America/New_York or UTC"
        throw fail(node, key, "unknown time zone '\(name)'", hint: hint)
    }

    func retryPolicy(_ node: Node) throws(ConfigError) -> RetryPolicy {
        var maxAttempts = 3
        var backoff = "exponential"
        var initial = 100
        var maxDelay = 60_000
        var jitter = 0.0
        var backoffNode: Node?
        for (key, value) in try mapping(
            node, "retry", allowed: ["maxAttempts", "backoff", "initialDelayMs", "maxDelayMs", "jitter"])
        {
            switch key {
            case "maxAttempts": maxAttempts = try int(value, "retry.maxAttempts", minimum: 1)
            case "backoff":
                backoff = try string(value, "retry.backoff")
                backoffNode = value
            case "initialDelayMs": initial = try int(value, "retry.initialDelayMs", minimum: 0)
            case "maxDelayMs": maxDelay = try int(value, "retry.maxDelayMs", minimum: 0)
            default:
                if let flag = try? bool(value, "retry.jitter") {
                    jitter = flag ? 1 : 0
                } else {
                    jitter = try double(value, "retry.jitter")
                    guard (0...1).contains(jitter) else {
                        throw fail(value, "retry.jitter", "expected true, false or a fraction between 0 and 1")
                    }
                }
            }
        }
        let shape: RetryPolicy.Backoff
        switch backoff {
        case "fixed": shape = .fixed(.milliseconds(initial))
        case "linear": shape = .linear(initial: .milliseconds(initial), step: .milliseconds(initial))
        case "exponential": shape = .exponential(initial: .milliseconds(initial))
        default:
            let hint = suggestion(for: backoff, among: ["fixed", "linear", "exponential"]).map {
                "did you mean '\($0)'?"
            }
            throw fail(
                backoffNode, "retry.backoff", "expected fixed, linear or exponential, got '\(backoff)'", hint: hint)
        }
        return RetryPolicy(maxAttempts: maxAttempts, backoff: shape, maxDelay: .milliseconds(maxDelay), jitter: jitter)
    }

    func address(_ node: Node, _ key: String) throws(ConfigError) -> String {
        let text = try string(node, key)
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port), colon != text.startIndex
        else {
            throw fail(node, key, "expected host:port, like 127.0.0.1:8080, got '\(text)'")
        }
        return text
    }
}

extension JSONPath {
    /// `$.targetId`, the default target of a task.
    package static let targetId: JSONPath = try! JSONPath(parsing: "$.targetId")
}

/// The folder part of `path` ("" for a bare name, "/" for a file at the root). Not NSString's
/// `deletingLastPathComponent`: this Foundation traps on a one-character name ("x").
fileprivate func folderOf(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "" }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}
