import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Appends JSON lines to a file (or standard output for `-`), buffered, safe from any thread.
public final class JSONLinesSink: Sendable {
    public let path: String
    let descriptor: Int32
    let buffer = Mutex<[UInt8]>([])
    static let flushAt = 64 * 1024

    /// Opens (creating folders) for appending. Throws a message naming the path.
    public init(path: String) throws(ConfigError) {
        self.path = path
        if path == "-" {
            descriptor = 1
            return
        }
        let folder = (path as NSString).deletingLastPathComponent
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

    public func write(_ line: String) { write(bytes: Array(line.utf8)) }

    /// Appends one line (the newline is added).
    public func write(bytes line: [UInt8]) {
        let flush: [UInt8]? = buffer.withLock { buffer in
            buffer.append(contentsOf: line)
            buffer.append(10)
            guard buffer.count >= Self.flushAt || descriptor == 1 else { return nil }
            defer { buffer.removeAll(keepingCapacity: true) }
            return buffer
        }
        if let flush { writeAll(flush) }
    }

    public func flush() {
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

/// A JSON object written field by field into bytes, keys in order.
struct JSONObjectWriter {
    private(set) var bytes: [UInt8] = [123]  // "{"

    init() { bytes.reserveCapacity(256) }

    private mutating func key(_ key: StaticString) {
        if bytes.count > 1 { bytes.append(44) }  // ","
        bytes.append(34)
        key.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(34)
        bytes.append(58)  // ":"
    }

    mutating func add(_ name: StaticString, _ value: String?) {
        key(name)
        guard var value else { return bytes.append(contentsOf: [110, 117, 108, 108]) }  // null
        value.withUTF8 { appendQuoted($0) }
    }

    mutating func add(_ name: StaticString, _ value: Int64) {
        key(name)
        appendDecimal(value)
    }

    mutating func add(_ name: StaticString, _ value: UInt64) {
        key(name)
        appendDecimal(Int64(bitPattern: value))
    }

    mutating func add(_ name: StaticString, _ value: Int) { add(name, Int64(value)) }

    mutating func add(_ name: StaticString, raw: String) {
        key(name)
        bytes.append(contentsOf: raw.utf8)
    }

    private mutating func appendDecimal(_ value: Int64) {
        withDecimal(value) { bytes.append(contentsOf: $0) }
    }

    private mutating func appendQuoted(_ utf8: UnsafeBufferPointer<UInt8>) {
        bytes.append(34)
        for byte in utf8 {
            switch byte {
            case 34: bytes.append(contentsOf: [92, 34])
            case 92: bytes.append(contentsOf: [92, 92])
            case 10: bytes.append(contentsOf: [92, 110])
            case 13: bytes.append(contentsOf: [92, 114])
            case 9: bytes.append(contentsOf: [92, 116])
            case 0..<32:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [92, 117, 48, 48, hex[Int(byte >> 4)], hex[Int(byte & 15)]])
            default: bytes.append(byte)
            }
        }
        bytes.append(34)
    }

    var finished: [UInt8] {
        var out = bytes
        out.append(125)  // "}"
        return out
    }

    var text: String { String(decoding: finished, as: UTF8.self) }
}
