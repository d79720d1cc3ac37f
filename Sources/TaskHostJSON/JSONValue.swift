import Foundation

/// A JSON value: what the one JSON codec of TaskHost (``JSONParser``) reads.
package enum JSONValue: Decodable, Sendable {
    case null, bool(Bool), number(Double), integer(Int64), string(String), array([JSONValue])
    case object([String: JSONValue])
    /// An integer beyond Int64 (like 18446744073709551615, `UInt64.max`), kept as its exact text
    /// (digits, with a leading `-` when negative): converting it to a `Double` would round it.
    case bigInteger(String)

    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    package var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number, .integer, .bigInteger: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// A simple JSON path: `$`, `$.data.sku`, `$.items[0].id`.
package struct JSONPath: Sendable, Equatable {
    package enum Step: Sendable, Equatable {
        case key(String)
        case index(Int)
    }

    package let text: String

    /// A path that cannot be read: the message says what is wrong and how to write it.
    package struct SyntaxError: Error, CustomStringConvertible, Sendable {
        package var description: String
        init(_ description: String) { self.description = description }
    }
    package let steps: [Step]

    package init(parsing text: String) throws(JSONPath.SyntaxError) {
        guard text.hasPrefix("$") else {
            throw SyntaxError("'\(text)' is not a JSON path: start it with $, as in $.data.sku")
        }
        var steps: [Step] = []
        var rest = Substring(text.dropFirst())
        while !rest.isEmpty {
            if rest.hasPrefix(".") {
                rest = rest.dropFirst()
                let key = rest.prefix { $0 != "." && $0 != "[" }
                guard !key.isEmpty else { throw SyntaxError("'\(text)': empty key after '.'") }
                steps.append(.key(String(key)))
                rest = rest.dropFirst(key.count)
            } else if rest.hasPrefix("[") {
                guard let close = rest.firstIndex(of: "]"),
                    let index = Int(rest[rest.index(after: rest.startIndex)..<close]),
                    index >= 0
                else { throw SyntaxError("'\(text)': expected [N] with N a non-negative integer") }
                steps.append(.index(index))
                rest = rest[rest.index(after: close)...]
            } else {
                throw SyntaxError("'\(text)': unexpected '\(rest.first!)'; use .key or [index]")
            }
        }
        self.text = text
        self.steps = steps
    }

    package func evaluate(_ value: JSONValue, from start: Int = 0) -> JSONValue? {
        var current = value
        for step in steps[start...] {
            switch (step, current) {
            case (.key(let key), .object(let object)):
                guard let next = object[key] else { return nil }
                current = next
            case (.index(let index), .array(let array)):
                guard index < array.count else { return nil }
                current = array[index]
            default:
                return nil
            }
        }
        return current
    }
}

/// A JSON object written field by field into bytes, keys in order.
package struct JSONObjectWriter {
    private(set) var bytes: [UInt8] = [123]  // "{"

    package init() { bytes.reserveCapacity(256) }

    private mutating func key(_ key: StaticString) {
        if bytes.count > 1 { bytes.append(44) }  // ","
        bytes.append(34)
        key.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(34)
        bytes.append(58)  // ":"
    }

    /// A member whose name is only known at run time (log metadata).
    package mutating func add(dynamic name: String, _ value: String?) {
        if bytes.count > 1 { bytes.append(44) }  // ","
        var name = name
        name.withUTF8 { appendQuoted($0) }
        bytes.append(58)  // ":"
        guard var value else { return bytes.append(contentsOf: [110, 117, 108, 108]) }  // null
        value.withUTF8 { appendQuoted($0) }
    }

    /// A member whose name is only known at run time, its value JSON text written as is (a number).
    package mutating func add(dynamic name: String, raw: String) {
        if bytes.count > 1 { bytes.append(44) }  // ","
        var name = name
        name.withUTF8 { appendQuoted($0) }
        bytes.append(58)  // ":"
        bytes.append(contentsOf: raw.utf8)
    }

    package mutating func add(_ name: StaticString, _ value: String?) {
        key(name)
        guard var value else { return bytes.append(contentsOf: [110, 117, 108, 108]) }  // null
        value.withUTF8 { appendQuoted($0) }
    }

    package mutating func add(_ name: StaticString, _ value: Int64) {
        key(name)
        appendDecimal(value)
    }

    package mutating func add(_ name: StaticString, _ value: UInt64) {
        key(name)
        appendDecimal(Int64(bitPattern: value))
    }

    package mutating func add(_ name: StaticString, _ value: Int) { add(name, Int64(value)) }

    /// Adds `value` as JSON, unaltered, when it is one JSON value on one line (no CR or LF, which
    /// would break a JSON Lines file); as a JSON string otherwise.
    package mutating func add(_ name: StaticString, jsonOrString value: String?) {
        guard let value, JSONParser.isOneLineJSON(value) else { return add(name, value) }
        add(name, raw: value)
    }

    package mutating func add(_ name: StaticString, raw: String) {
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

    package var finished: [UInt8] {
        var out = bytes
        out.append(125)  // "}"
        return out
    }

    package var text: String { String(decoding: finished, as: UTF8.self) }
}

package func quote(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// Renders an integer in decimal into a stack buffer, without allocating.
@inlinable @inline(__always)
package func withDecimal<R>(_ value: Int64, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { buffer in
        var magnitude = value.magnitude
        var index = 24
        repeat {
            index -= 1
            buffer[index] = UInt8(truncatingIfNeeded: 48 + magnitude % 10)
            magnitude /= 10
        } while magnitude > 0
        if value < 0 {
            index -= 1
            buffer[index] = 45  // "-"
        }
        return body(UnsafeBufferPointer(rebasing: buffer[index...]))
    }
}
