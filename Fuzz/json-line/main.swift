// Fuzz target: the JSON line decoder's untrusted part. One input line's bytes go through the
// UTF-8 check (SourceLine) and the strict parser with the span of `data`, as the intake decodes a
// task; then the invariants the pipeline relies on are checked.
// Built by scripts/fuzz.sh with Sources/TaskHostJSON and Sources/TaskHostSources/SourceLine.swift.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSONLine(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    let line = SourceLine(bytes)
    guard case .text(let text) = line else {
        guard case .invalidUTF8(let kept, let offset) = line, kept == bytes, offset < bytes.count,
            String(validating: bytes[..<offset], as: UTF8.self) != nil
        else { fatalError("a line that is not UTF-8 must keep its bytes and point at a bad byte") }
        return 0
    }
    guard let (value, span) = try? JSONParser.parse(text, spanOf: "data") else { return 0 }
    if let span {
        // The executor gets `data` byte for byte: the span must lie inside the line and hold one
        // JSON value on its own.
        let utf8 = Array(text.utf8)
        guard span.lowerBound >= 0, span.upperBound <= utf8.count, span.lowerBound < span.upperBound,
            (try? JSONParser.parse(String(decoding: utf8[span], as: UTF8.self))) != nil
        else { fatalError("the span of data does not hold a JSON value: \(span)") }
    }
    // What the intake reads of a task must not trap, whatever the value.
    _ = value.kind
    _ = JSONPath.targetId.evaluate(value)
    var writer = JSONObjectWriter()
    writer.add("input", jsonOrString: text)
    writer.add("value", text)
    guard (try? JSONParser.parse(writer.text)) != nil else {
        fatalError("a dead-letter line written from a valid line is not JSON")
    }
    return 0
}

extension JSONPath {
    static let targetId = try! JSONPath(parsing: "$.targetId")
}
