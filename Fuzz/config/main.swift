// Fuzz target: the configuration reader (YAML or JSON, composed by Yams, read into typed values).
// Whatever the bytes, the reader answers with a configuration or a ConfigError; it never traps.
// Built by scripts/fuzz.sh with Sources/TaskHostConfig, linked with the modules it imports.

import TaskHostConfig

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    guard let text = String(validating: bytes, as: UTF8.self) else { return 0 }
    do {
        _ = try ConfigLoader.parse(text, file: "fuzz.yaml", environment: ["HOME": "/tmp"])
    } catch {
        // An answer: it names a place in the file (or none) and says something.
        guard !error.description.isEmpty else { fatalError("an empty configuration error") }
        if let line = error.line {
            guard line >= 1 else { fatalError("a configuration error at line \(line)") }
        }
    }
    return 0
}
