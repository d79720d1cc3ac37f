import TaskHostJSON
import TaskHostStore

/// A configuration error: where (file, line, column, key), what was expected, and what to do.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var line: Int?
    public var column: Int?
    /// The key path at fault, like `sources.orders.kind`.
    public var key: String
    public var message: String
    /// What to do next, or nil when the message says it.
    public var hint: String?

    public init(file: String, line: Int?, column: Int?, key: String, message: String, hint: String? = nil) {
        self.file = file
        self.line = line
        self.column = column
        self.key = key
        self.message = message
        self.hint = hint
    }

    public var description: String {
        var location = file
        if let line { location += ":\(line)" + (column.map { ":\($0)" } ?? "") }
        let subject = key.isEmpty ? "" : "\(key): "
        return "\(location): \(subject)\(message)" + (hint.map { " (\($0))" } ?? "")
    }
}
