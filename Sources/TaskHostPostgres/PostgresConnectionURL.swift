import Foundation
import PostgresNIO

/// A `postgres://user:password@host:port/database` URL read into a client configuration.
///
/// Supported: user and password (percent-encoded), host (or `?host=/socket/folder` for a unix
/// socket), port (5432 by default), database (the user's name by default), and
/// `?sslmode=disable` (the default). TLS is not supported yet: `sslmode=require` (or any other
/// mode) is refused with a message rather than ignored.
package struct PostgresConnectionURL: Sendable, Equatable {
    package var user: String
    package var password: String?
    package var host: String
    package var port: Int
    package var unixSocketFolder: String?
    package var database: String

    /// Reads `url`; the error says what is wrong, without repeating the password.
    package init(_ url: String) throws(PostgresQueueError) {
        guard url.hasPrefix("postgres://") || url.hasPrefix("postgresql://"),
            let components = URLComponents(string: url)
        else {
            throw PostgresQueueError(
                "the database URL is not a postgres:// URL", remedy: "postgres://user:password@host:5432/database")
        }
        guard let user = components.percentEncodedUser.flatMap({ $0.removingPercentEncoding }), !user.isEmpty else {
            throw PostgresQueueError(
                "the database URL names no user", remedy: "postgres://user:password@host:5432/database")
        }
        self.user = user
        password = components.percentEncodedPassword.flatMap { $0.removingPercentEncoding }
        host = components.host.flatMap { $0.isEmpty ? nil : $0 } ?? "localhost"
        port = components.port ?? 5432
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        database = path.removingPercentEncoding.flatMap { $0.isEmpty ? nil : $0 } ?? user
        unixSocketFolder = nil
        for item in components.queryItems ?? [] {
            switch item.name {
            case "host":
                if let value = item.value, value.hasPrefix("/") {
                    unixSocketFolder = value
                } else {
                    host = item.value ?? host
                }
            case "sslmode":
                guard item.value == "disable" else {
                    throw PostgresQueueError(
                        "sslmode=\(item.value ?? "") is not supported yet (TLS to PostgreSQL is not implemented)",
                        remedy: "reach the database over a private network or a unix socket, with sslmode=disable")
                }
            default:
                throw PostgresQueueError(
                    "the database URL has an unknown parameter '\(item.name)'",
                    remedy: "supported: host (a unix socket folder) and sslmode=disable")
            }
        }
    }

    /// The pool's configuration; `searchPath` becomes every connection's `search_path`.
    package func clientConfiguration(searchPath: String) -> PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        if let folder = unixSocketFolder {
            configuration = PostgresClient.Configuration(
                unixSocketPath: folder + "/.s.PGSQL.\(port)", username: user, password: password, database: database)
        } else {
            configuration = PostgresClient.Configuration(
                host: host, port: port, username: user, password: password, database: database, tls: .disable)
        }
        configuration.options.additionalStartupParameters = [
            ("search_path", searchPath), ("application_name", "taskhost"),
        ]
        return configuration
    }

    /// One connection's configuration (outside the pool), with the same `search_path`.
    package func connectionConfiguration(searchPath: String, connectTimeout: Duration)
        -> PostgresConnection.Configuration
    {
        var configuration: PostgresConnection.Configuration
        if let folder = unixSocketFolder {
            configuration = PostgresConnection.Configuration(
                unixSocketPath: folder + "/.s.PGSQL.\(port)", username: user, password: password, database: database)
        } else {
            configuration = PostgresConnection.Configuration(
                host: host, port: port, username: user, password: password, database: database, tls: .disable)
        }
        configuration.options.additionalStartupParameters = [
            ("search_path", searchPath), ("application_name", "taskhost"),
        ]
        configuration.options.connectTimeout = .milliseconds(
            connectTimeout.components.seconds * 1000 + connectTimeout.components.attoseconds / 1_000_000_000_000_000)
        return configuration
    }

    /// The URL without its password, for messages.
    package var redacted: String {
        "postgres://\(user)@\(unixSocketFolder ?? host):\(port)/\(database)"
    }
}
