/// A small, strict JSON parser (RFC 8259) into ``JSONValue``, over UTF-8 bytes. It exists
/// because decoding arbitrary JSON through `Decodable` throws and catches an error for every
/// type it tries, which made parsing the pipeline's input lines its most expensive step.
package struct JSONParser {
    package struct Failure: Error, CustomStringConvertible {
        package var message: String
        package var offset: Int
        package var description: String { "\(message) at byte \(offset + 1)" }
    }

    package static func parse(_ text: String) throws(Failure) -> JSONValue {
        try parse(text, spanOf: nil).value
    }

    /// Parses `text`, and tells where the value of the top-level object's member `key` lies in
    /// it (byte offsets into its UTF-8), so that a caller can pass that value on byte for byte
    /// (a task's `data`: its whitespace, number text and escapes as they came).
    package static func parse(_ text: String, spanOf key: String?) throws(Failure) -> (
        value: JSONValue, span: Range<Int>?
    ) {
        var text = text
        let result: Result<(JSONValue, Range<Int>?), Failure> = text.withUTF8 { bytes in
            var parser = JSONParser(bytes: bytes)
            parser.spanKey = key
            do throws(Failure) {
                parser.skipSpace()
                let value = try parser.value(depth: 0)
                parser.skipSpace()
                guard parser.index == bytes.count else { throw parser.fail("unexpected text after the value") }
                return .success((value, parser.span))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Whether `text` is exactly one JSON value with no CR or LF in it (whitespace around it and
    /// inside it is allowed otherwise): what can stand in a JSON Lines record unaltered.
    package static func isOneLineJSON(_ text: String) -> Bool {
        let utf8 = text.utf8
        // Most outputs that are not JSON fail at their first byte: no parse for them.
        guard let first = utf8.first(where: { $0 != 32 && $0 != 9 }),
            [123, 91, 34, 45, 116, 102, 110].contains(first) || (48...57).contains(first),
            !utf8.contains(10), !utf8.contains(13)
        else { return false }
        return (try? parse(text)) != nil
    }

    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0
    /// The top-level member whose value's span is recorded in ``span``.
    var spanKey: String?
    var span: Range<Int>?

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    func fail(_ message: String) -> Failure { Failure(message: message, offset: index) }

    mutating func skipSpace() {
        while index < bytes.count, [32, 9, 10, 13].contains(bytes[index]) { index += 1 }
    }

    mutating func expect(_ literal: StaticString, _ value: JSONValue) throws(Failure) -> JSONValue {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count,
            (0..<count).allSatisfy({ bytes[index + $0] == literal.utf8Start[$0] })
        else { throw fail("invalid literal") }
        index += count
        return value
    }

    mutating func value(depth: Int) throws(Failure) -> JSONValue {
        guard depth < 512 else { throw fail("nested too deeply") }
        guard index < bytes.count else { throw fail("unexpected end of input") }
        switch bytes[index] {
        case 123: return try object(depth: depth)
        case 91: return try array(depth: depth)
        case 34: return .string(try string())
        case 116: return try expect("true", .bool(true))
        case 102: return try expect("false", .bool(false))
        case 110: return try expect("null", .null)
        case 45, 48...57: return try number()
        default: throw fail("unexpected character '\(Character(Unicode.Scalar(bytes[index])))'")
        }
    }

    mutating func object(depth: Int) throws(Failure) -> JSONValue {
        index += 1
        var members: [String: JSONValue] = [:]
        skipSpace()
        if index < bytes.count, bytes[index] == 125 {
            index += 1
            return .object(members)
        }
        while true {
            skipSpace()
            guard index < bytes.count, bytes[index] == 34 else { throw fail("expected a key in quotes") }
            let key = try string()
            skipSpace()
            guard index < bytes.count, bytes[index] == 58 else { throw fail("expected ':' after a key") }
            index += 1
            skipSpace()
            let start = index
            members[key] = try value(depth: depth + 1)
            if depth == 0, key == spanKey { span = start..<index }
            skipSpace()
            guard index < bytes.count else { throw fail("unexpected end of input in an object") }
            if bytes[index] == 44 {
                index += 1
                continue
            }
            guard bytes[index] == 125 else { throw fail("expected ',' or '}'") }
            index += 1
            return .object(members)
        }
    }

    mutating func array(depth: Int) throws(Failure) -> JSONValue {
        index += 1
        var items: [JSONValue] = []
        skipSpace()
        if index < bytes.count, bytes[index] == 93 {
            index += 1
            return .array(items)
        }
        while true {
            skipSpace()
            items.append(try value(depth: depth + 1))
            skipSpace()
            guard index < bytes.count else { throw fail("unexpected end of input in an array") }
            if bytes[index] == 44 {
                index += 1
                continue
            }
            guard bytes[index] == 93 else { throw fail("expected ',' or ']'") }
            index += 1
            return .array(items)
        }
    }

    mutating func string() throws(Failure) -> String {
        index += 1
        let start = index
        // Fast path: no escapes.
        while index < bytes.count, bytes[index] != 34, bytes[index] != 92 {
            guard bytes[index] >= 32 else { throw fail("control character in a string") }
            index += 1
        }
        guard index < bytes.count else { throw fail("unterminated string") }
        if bytes[index] == 34 {
            defer { index += 1 }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        }
        var out = Array(bytes[start..<index])
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 34 {
                index += 1
                return String(decoding: out, as: UTF8.self)
            }
            guard byte >= 32 else { throw fail("control character in a string") }
            if byte != 92 {
                out.append(byte)
                index += 1
                continue
            }
            index += 1
            guard index < bytes.count else { throw fail("unterminated escape") }
            let escape = bytes[index]
            index += 1
            switch escape {
            case 34, 92, 47: out.append(escape)
            case 98: out.append(8)
            case 102: out.append(12)
            case 110: out.append(10)
            case 114: out.append(13)
            case 116: out.append(9)
            case 117:
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    guard index + 1 < bytes.count, bytes[index] == 92, bytes[index + 1] == 117 else {
                        throw fail("lone surrogate in a string")
                    }
                    index += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw fail("invalid surrogate pair") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(scalar) {
                    throw fail("lone surrogate in a string")
                }
                out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
            default:
                throw fail("invalid escape")
            }
        }
        throw fail("unterminated string")
    }

    mutating func hex4() throws(Failure) -> UInt32 {
        guard index + 4 <= bytes.count else { throw fail("short \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt32
            switch byte {
            case 48...57: digit = UInt32(byte - 48)
            case 97...102: digit = UInt32(byte - 87)
            case 65...70: digit = UInt32(byte - 55)
            default: throw fail("invalid \\u escape")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }

    mutating func number() throws(Failure) -> JSONValue {
        let start = index
        if bytes[index] == 45 { index += 1 }
        guard index < bytes.count, (48...57).contains(bytes[index]) else { throw fail("invalid number") }
        if bytes[index] == 48 {
            index += 1
        } else {
            while index < bytes.count, (48...57).contains(bytes[index]) { index += 1 }
        }
        var integral = true
        if index < bytes.count, bytes[index] == 46 {
            integral = false
            index += 1
            guard index < bytes.count, (48...57).contains(bytes[index]) else { throw fail("invalid number") }
            while index < bytes.count, (48...57).contains(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == 101 || bytes[index] == 69 {
            integral = false
            index += 1
            if index < bytes.count, bytes[index] == 43 || bytes[index] == 45 { index += 1 }
            guard index < bytes.count, (48...57).contains(bytes[index]) else { throw fail("invalid number") }
            while index < bytes.count, (48...57).contains(bytes[index]) { index += 1 }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        if integral { return Int64(text).map(JSONValue.integer) ?? .bigInteger(text) }
        guard let value = Double(text) else { throw fail("invalid number") }
        return .number(value)
    }
}
