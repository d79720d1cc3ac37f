/// One input line as a source read it: its text, or its bytes unchanged when they are not UTF-8.
///
/// A line that is not UTF-8 is never repaired (no U+FFFD in place of its bytes): the intake sends
/// it to the dead letters with the offset of its first invalid byte, and the bytes as they came.
package enum SourceLine: Sendable, Equatable {
    case text(String)
    /// The line's bytes, and the 0-based offset of the first byte that is not UTF-8.
    case invalidUTF8([UInt8], offset: Int)

    /// The line in `bytes` (without its newline).
    package init(_ bytes: some Collection<UInt8>) {
        if let text = String(validating: bytes, as: UTF8.self) {
            self = .text(text)
        } else {
            self = .invalidUTF8(Array(bytes), offset: firstInvalidUTF8(bytes) ?? 0)
        }
    }

    /// Whether the line holds nothing but spaces, tabs and CRs: skipped, not a task.
    package var isBlank: Bool {
        switch self {
        case .text(let text): text.utf8.allSatisfy { $0 == 32 || $0 == 9 || $0 == 13 }
        case .invalidUTF8: false
        }
    }

    /// Why a line that is not UTF-8 is refused, counting bytes from 1; nil for text.
    package var invalidReason: String? {
        guard case .invalidUTF8(_, let offset) = self else { return nil }
        return "invalid UTF-8 at byte \(offset + 1)"
    }
}

/// The 0-based offset of the first byte of `bytes` that does not begin a valid UTF-8 sequence
/// (an overlong form, a surrogate, a stray continuation byte, a sequence cut short); nil when
/// all of it is UTF-8.
package func firstInvalidUTF8(_ bytes: some Collection<UInt8>) -> Int? {
    var iterator = bytes.makeIterator()
    var parser = Unicode.UTF8.ForwardParser()
    var offset = 0
    while true {
        switch parser.parseScalar(from: &iterator) {
        case .valid(let scalar): offset += scalar.count
        case .emptyInput: return nil
        case .error: return offset
        }
    }
}

/// The lines of an HTTP body (JSON Lines): split at LF, a CR before it dropped, blank lines
/// skipped. Each line is checked on its own: one that is not UTF-8 does not spoil the others.
package func bodyLines(_ bytes: some Collection<UInt8>) -> [SourceLine] {
    let bytes = Array(bytes)
    var lines: [SourceLine] = []
    var start = 0
    while start < bytes.count {
        let newline = bytes[start...].firstIndex(of: 10) ?? bytes.count
        var end = newline
        if end > start, bytes[end - 1] == 13 { end -= 1 }
        let line = SourceLine(bytes[start..<end])
        if !line.isBlank { lines.append(line) }
        start = newline + 1
    }
    return lines
}
