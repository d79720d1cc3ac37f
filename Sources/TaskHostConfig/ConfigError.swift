import TaskHostJSON
import TaskHostStore

/// A configuration error: where (file, line, column, key), what was expected, and what to do.
package struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    package var file: String
    package var line: Int?
    package var column: Int?
    /// The key path at fault, like `sources.orders.kind`.
    package var key: String
    package var message: String
    /// What to do next, or nil when the message says it.
    package var hint: String?

    package init(file: String, line: Int?, column: Int?, key: String, message: String, hint: String? = nil) {
        self.file = file
        self.line = line
        self.column = column
        self.key = key
        self.message = message
        self.hint = hint
    }

    package var description: String {
        var location = file
        if let line { location += ":\(line)" + (column.map { ":\($0)" } ?? "") }
        let subject = key.isEmpty ? "" : "\(key): "
        return "\(location): \(subject)\(message)" + (hint.map { " (\($0))" } ?? "")
    }
}
