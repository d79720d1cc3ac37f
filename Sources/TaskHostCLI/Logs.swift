import ArgumentParser
import Foundation
import Logging
import Synchronization
import TaskHostJSON

#if canImport(Glibc)
    import Glibc
#endif

/// How `run` logs: `--log-level` and `--log-format`, or `TASKHOST_LOG_LEVEL` and
/// `TASKHOST_LOG_FORMAT` (the options win). The format is JSON lines when standard error is not a
/// terminal, text when it is, unless one is chosen.
struct LogOptions: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case json, text, auto
    }

    @Option(
        name: .customLong("log-level"),
        help: "trace, debug, info, notice, warning, error or critical (default info; env TASKHOST_LOG_LEVEL).")
    var level: Logger.Level?

    @Option(
        name: .customLong("log-format"),
        help: "json, text or auto: JSON lines unless standard error is a terminal (env TASKHOST_LOG_FORMAT).")
    var format: Format?

    func validate() throws {
        // The environment's values are checked here too, so that a typo is an error, not a default.
        let environment = ProcessInfo.processInfo.environment
        if level == nil, let value = environment["TASKHOST_LOG_LEVEL"], Logger.Level(rawValue: value) == nil {
            throw ValidationError(
                "TASKHOST_LOG_LEVEL=\(value): expected one of "
                    + Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))
        }
        if format == nil, let value = environment["TASKHOST_LOG_FORMAT"], Format(rawValue: value) == nil {
            throw ValidationError("TASKHOST_LOG_FORMAT=\(value): expected json, text or auto")
        }
    }

    var resolvedLevel: Logger.Level {
        level ?? ProcessInfo.processInfo.environment["TASKHOST_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) }
            ?? .info
    }

    var resolvedJSON: Bool {
        let chosen =
            format ?? ProcessInfo.processInfo.environment["TASKHOST_LOG_FORMAT"].flatMap { Format(rawValue: $0) }
        return switch chosen ?? .auto {
        case .json: true
        case .text: false
        case .auto: isatty(2) == 0
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

enum Logging {
    /// Whether standard error carries JSON lines only (set once by ``bootstrapped(_:)``): the
    /// errors and the closing summary of `run` are then log lines too.
    static let json = Atomic<Bool>(false)

    /// swift-log to standard error, as the options say.
    static func bootstrapped(_ options: LogOptions) -> Logger {
        let json = options.resolvedJSON
        let level = options.resolvedLevel
        Self.json.store(json, ordering: .relaxed)
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, logLevel: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "taskhost")
        logger.logLevel = level
        return logger
    }
}

/// One JSON object per log line, on standard error, written with the host's one JSON writer
/// (a `JSONSerialization` and a date formatter per line cost ten times the work they log).
/// Metadata given as numbers (`.stringConvertible` of an integer, a float or a Bool) are written
/// as JSON numbers and booleans; everything else as strings.
struct JSONLogHandler: LogHandler {
    let label: String
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    init(label: String, logLevel: Logger.Level = .info) {
        self.label = label
        self.logLevel = logLevel
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = event.metadata.map { metadata.merging($0, uniquingKeysWith: { $1 }) } ?? metadata
        Self.write(level: event.level, label: label, message: "\(event.message)", metadata: fields)
    }

    static func line(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata) -> [UInt8] {
        var line = JSONObjectWriter()
        line.add("time", rfc3339Now())
        line.add("level", level.rawValue)
        line.add("logger", label)
        line.add("message", message)
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            // A metadata key that names a field of the line itself is kept apart, not duplicated.
            let name = ["time", "level", "logger", "message"].contains(key) ? "metadata." + key : key
            switch value {
            case .stringConvertible(let number as any BinaryInteger):
                line.add(dynamic: name, raw: "\(number)")
            case .stringConvertible(let number as Double) where number.isFinite:
                line.add(dynamic: name, raw: "\(number)")
            case .stringConvertible(let flag as Bool):
                line.add(dynamic: name, raw: flag ? "true" : "false")
            default:
                line.add(dynamic: name, "\(value)")
            }
        }
        var bytes = line.finished
        bytes.append(10)
        return bytes
    }

    static func write(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata) {
        let bytes = line(level: level, label: label, message: message, metadata: metadata)
        bytes.withUnsafeBytes { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

/// Now in RFC 3339, UTC, with milliseconds.
func rfc3339Now() -> String {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var parts = tm()
    var seconds = now.tv_sec
    gmtime_r(&seconds, &parts)
    func pad(_ value: Int32, _ width: Int) -> String {
        let text = String(value)
        return String(repeating: "0", count: max(0, width - text.count)) + text
    }
    return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
        + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))."
        + "\(pad(Int32(now.tv_nsec / 1_000_000), 3))Z"
}
