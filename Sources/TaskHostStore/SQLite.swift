import CSQLite

/// An SQLite result code with its message.
package struct SQLiteError: Error, CustomStringConvertible {
    package var code: Int32
    package var message: String

    /// The primary result code (the low byte of an extended code).
    package var primary: Int32 { code & 0xFF }
    package var isFull: Bool { primary == SQLITE_FULL }
    package var isCorrupt: Bool { primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB }
    package var isReadOnly: Bool { primary == SQLITE_READONLY || primary == SQLITE_CANTOPEN || primary == SQLITE_PERM }
    package var isBusy: Bool { primary == SQLITE_BUSY || primary == SQLITE_LOCKED }

    package var description: String { "\(message) (SQLite code \(code))" }
}

/// One SQLite connection. Not thread-safe: its owner serializes every use.
package final class SQLiteDatabase {
    package let handle: OpaquePointer
    private var cache: [String: SQLiteStatement] = [:]

    package init(path: String, readOnly: Bool = false, create: Bool = true) throws(SQLiteError) {
        var db: OpaquePointer?
        var flags = readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE
        if create && !readOnly { flags |= SQLITE_OPEN_CREATE }
        flags |= SQLITE_OPEN_NOMUTEX
        let code = sqlite3_open_v2(path, &db, flags, nil)
        guard code == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError(code: code, message: message)
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
    }

    deinit {
        cache.removeAll()
        sqlite3_close_v2(handle)
    }

    package func error(_ code: Int32) -> SQLiteError {
        SQLiteError(code: code, message: String(cString: sqlite3_errmsg(handle)))
    }

    /// Runs one or more statements that return no rows.
    package func execute(_ sql: String) throws(SQLiteError) {
        var message: UnsafeMutablePointer<CChar>?
        let code = sqlite3_exec(handle, sql, nil, nil, &message)
        if code != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(message)
            throw SQLiteError(code: code, message: text)
        }
    }

    /// A prepared statement, cached by its text and reset for reuse.
    package func statement(_ sql: String) throws(SQLiteError) -> SQLiteStatement {
        if let cached = cache[sql] {
            cached.reset()
            return cached
        }
        let statement = try SQLiteStatement(db: self, sql: sql)
        cache[sql] = statement
        return statement
    }

    /// The first column of the first row, as an integer (nil when there is no row or it is NULL).
    package func integer(_ sql: String, _ bindings: [SQLiteValue] = []) throws(SQLiteError) -> Int64? {
        let statement = try statement(sql)
        defer { statement.reset() }
        try statement.bind(bindings)
        guard try statement.step(), !statement.isNull(0) else { return nil }
        return statement.int(0)
    }

    /// The first column of the first row, as text.
    package func text(_ sql: String, _ bindings: [SQLiteValue] = []) throws(SQLiteError) -> String? {
        let statement = try statement(sql)
        defer { statement.reset() }
        try statement.bind(bindings)
        guard try statement.step() else { return nil }
        return statement.text(0)
    }

    /// Runs a statement that returns no rows; returns the number of rows it changed.
    @discardableResult
    package func run(_ sql: String, _ bindings: [SQLiteValue] = []) throws(SQLiteError) -> Int {
        let statement = try statement(sql)
        defer { statement.reset() }
        try statement.bind(bindings)
        while try statement.step() {}
        return Int(sqlite3_changes(handle))
    }

    package var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// Rows the last statement inserted, changed or deleted.
    package var changes: Int { Int(sqlite3_changes(handle)) }

    /// Resets every cached statement still stepping: one left mid-way would keep a read
    /// transaction open after COMMIT (the WAL could not restart, and another process's write
    /// would make the next BEGIN IMMEDIATE fail with SQLITE_BUSY_SNAPSHOT).
    package func resetBusyStatements() {
        for statement in cache.values where sqlite3_stmt_busy(statement.handle) != 0 {
            sqlite3_reset(statement.handle)
        }
    }
}

/// A value bound to a statement parameter.
package enum SQLiteValue {
    case integer(Int64)
    case text(String)
    case null

    package static func optional(_ text: String?) -> SQLiteValue { text.map { .text($0) } ?? .null }
    package static func int(_ value: Int) -> SQLiteValue { .integer(Int64(value)) }
}

private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

package final class SQLiteStatement {
    package let handle: OpaquePointer
    unowned let db: SQLiteDatabase

    package init(db: SQLiteDatabase, sql: String) throws(SQLiteError) {
        var statement: OpaquePointer?
        let code = sqlite3_prepare_v3(db.handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard code == SQLITE_OK, let statement else { throw db.error(code) }
        handle = statement
        self.db = db
    }

    deinit { sqlite3_finalize(handle) }

    package func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    package func bind(_ values: [SQLiteValue]) throws(SQLiteError) {
        for (offset, value) in values.enumerated() {
            try bind(value, at: Int32(offset + 1))
        }
    }

    package func bind(_ value: SQLiteValue, at index: Int32) throws(SQLiteError) {
        let code: Int32
        switch value {
        case .integer(let number): code = sqlite3_bind_int64(handle, index, number)
        case .text(let text): code = sqlite3_bind_text(handle, index, text, -1, transient)
        case .null: code = sqlite3_bind_null(handle, index)
        }
        if code != SQLITE_OK { throw db.error(code) }
    }

    /// Steps once: true when a row is available, false when done.
    package func step() throws(SQLiteError) -> Bool {
        let code = sqlite3_step(handle)
        if code == SQLITE_ROW { return true }
        if code == SQLITE_DONE { return false }
        let error = db.error(code)
        sqlite3_reset(handle)
        throw error
    }

    package func int(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
    package func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }
    package func text(_ column: Int32) -> String? {
        guard let pointer = sqlite3_column_text(handle, column) else { return nil }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }
}
