// Fuzz target: the HTTP source's body splitter (`bodyLines`, JSON Lines in a POST body).
// Built by scripts/fuzz.sh with Sources/TaskHostSources/SourceLine.swift.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPBody(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let body = Array(UnsafeBufferPointer(start: start, count: count))
    let lines = bodyLines(body)
    // Every line is a piece of the body between newlines, never blank, its bytes unchanged.
    var rest = body[...]
    for line in lines {
        let bytes: [UInt8]
        switch line {
        case .text(let text): bytes = Array(text.utf8)
        case .invalidUTF8(let kept, let offset):
            guard offset < kept.count, String(validating: kept[..<offset], as: UTF8.self) != nil,
                String(validating: kept, as: UTF8.self) == nil
            else { fatalError("a bad line's offset is not its first bad byte") }
            bytes = kept
        }
        guard !bytes.contains(10), !line.isBlank else { fatalError("a line holds a newline or is blank") }
        guard let found = rest.firstRange(of: bytes) else { fatalError("a line is not in the body") }
        rest = rest[found.upperBound...]
    }
    return 0
}
