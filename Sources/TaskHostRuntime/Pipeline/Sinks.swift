import Foundation
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostSources
import TaskHostStore

#if canImport(Glibc)
    import Glibc
#endif

/// Appends JSON lines to a file (or standard output for `-`), buffered, safe from any thread.
package final class JSONLinesSink: Sendable {
    package let path: String
    let descriptor: Int32
    let buffer = Mutex<[UInt8]>([])
    static let flushAt = 64 * 1024

    /// Opens (creating folders) for appending. Throws a message naming the path.
    package init(path: String) throws(ConfigError) {
        self.path = path
        if path == "-" {
            descriptor = 1
            return
        }
        let folder = folderOf(path)
        if !folder.isEmpty {
            try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        }
        descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw ConfigError(
                file: path, line: nil, column: nil, key: "",
                message: "cannot open for writing (\(String(cString: strerror(errno))))",
                hint: "check that the folder exists and is writable")
        }
    }

    package func write(_ line: String) { write(bytes: Array(line.utf8)) }

    /// Appends one line (the newline is added).
    package func write(bytes line: [UInt8]) {
        let flush: [UInt8]? = buffer.withLock { buffer in
            buffer.append(contentsOf: line)
            buffer.append(10)
            guard buffer.count >= Self.flushAt || descriptor == 1 else { return nil }
            defer { buffer.removeAll(keepingCapacity: true) }
            return buffer
        }
        if let flush { writeAll(flush) }
    }

    package func flush() {
        let pending = buffer.withLock { buffer -> [UInt8] in
            defer { buffer.removeAll(keepingCapacity: true) }
            return buffer
        }
        writeAll(pending)
    }

    private func writeAll(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    FileHandle.standardError.write(
                        Data("taskhost: cannot write \(path): \(String(cString: strerror(errno)))\n".utf8))
                    return
                }
                offset += written
            }
        }
    }

    deinit {
        flush()
        if descriptor > 2 { close(descriptor) }
    }
}
