import PostgresNIO

/// Why the PostgreSQL queue cannot be used or a statement failed: what happened, what to do, and
/// the server's SQLSTATE when it answered with an error.
package struct PostgresQueueError: Error, CustomStringConvertible, Sendable {
    package var message: String
    package var remedy: String
    /// The server's error code (`40P01` a deadlock, `57P01` a shutdown), when the server sent one.
    package var sqlState: String?

    package init(_ message: String, remedy: String, sqlState: String? = nil) {
        self.message = message
        self.remedy = remedy
        self.sqlState = sqlState
    }

    package var description: String { "\(message)\n  \(remedy)" }

    /// A failure of `doing` (a statement, a connection), with the server's own words when it sent
    /// some: postgres-nio's description of its errors leaves them out.
    package init(_ error: any Error, doing: String) {
        if let error = (error as? PostgresQueueError)
            ?? (error as? PostgresTransactionError)?.closureError as? PostgresQueueError
        {
            self = error
            return
        }
        let transaction = error as? PostgresTransactionError
        let inner = transaction.flatMap { $0.closureError ?? $0.beginError ?? $0.commitError ?? $0.rollbackError }
        let psql = (error as? PSQLError) ?? inner as? PSQLError
        if let psql, let info = psql.serverInfo {
            let text = [info[.message], info[.detail].map { "(\($0))" }].compactMap { $0 }.joined(separator: " ")
            self.init(
                "\(doing): the server answered \(info[.sqlState] ?? "?"): \(text)",
                remedy: "check the database (its log, its permissions) and retry", sqlState: info[.sqlState])
        } else if let psql {
            self.init(
                "\(doing): \(psql.code)" + (psql.underlying.map { " (\($0))" } ?? ""),
                remedy: "check that the database runs and can be reached from this host")
        } else {
            self.init(
                "\(doing): \(inner ?? error)", remedy: "check that the database runs and can be reached from this host")
        }
    }
}
