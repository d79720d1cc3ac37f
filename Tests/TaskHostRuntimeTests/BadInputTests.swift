import Foundation
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostSources
import Testing

@testable import TaskHostRuntime

/// Bad input answered exactly (issue 14, item 10): lines that are not UTF-8, duplicated keys in a
/// configuration, a function executor's missing library, uint64 arguments over their whole range.
@Suite struct BadInputTests {
    typealias P = PipelineTests

    // MARK: Lines that are not UTF-8

    @Test("A line that is not UTF-8 is found at its first bad byte; valid UTF-8 is text")
    func sourceLines() {
        #expect(SourceLine(Array(#"{"targetId": "é"}"#.utf8)) == .text(#"{"targetId": "é"}"#))
        let bad: [UInt8] = Array(#"{"targetId": "a"#.utf8) + [0xFF] + Array(#""}"#.utf8)
        #expect(SourceLine(bad) == .invalidUTF8(bad, offset: 15))
        #expect(SourceLine(bad).invalidReason == "invalid UTF-8 at byte 16")
        // An overlong encoding, a surrogate and a sequence cut short are refused too.
        #expect(firstInvalidUTF8([0x41, 0xC0, 0x80]) == 1)
        #expect(firstInvalidUTF8([0xED, 0xA0, 0x80]) == 0)
        #expect(firstInvalidUTF8([0x41, 0x42, 0xE2, 0x82]) == 2)
        #expect(firstInvalidUTF8(Array("naïve ✓ 😀".utf8)) == nil)
    }

    @Test("The HTTP body splitter keeps each line's bytes; a bad line does not spoil the others")
    func httpBody() {
        let body: [UInt8] = Array("{\"a\":1}\r\n\n  \n".utf8) + [0x7B, 0xFE, 0x7D, 10] + Array("{\"b\":2}".utf8)
        #expect(
            bodyLines(body) == [
                .text("{\"a\":1}"), .invalidUTF8([0x7B, 0xFE, 0x7D], offset: 1), .text("{\"b\":2}"),
            ])
        #expect(bodyLines([]) == [])
        #expect(bodyLines(Array("\r\n\n".utf8)) == [])
    }

    @Test("A file line splitter hands a line that is not UTF-8 on unchanged, with its end's offset")
    func lineSplitter() async {
        var splitter = LineSplitter()
        let lines = Lines()
        let chunk: [UInt8] = Array("{\"a\":1}\n".utf8) + [0x22, 0x80, 0x22, 13, 10]
        _ = await splitter.feed(chunk) { line, end in
            lines.append(line, end)
            return true
        }
        #expect(lines.all.map(\.0) == [.text("{\"a\":1}"), .invalidUTF8([0x22, 0x80, 0x22], offset: 1)])
        #expect(lines.all.map(\.1) == [8, 13])
    }

    final class Lines: @unchecked Sendable {
        var all: [(SourceLine, Int64)] = []
        func append(_ line: SourceLine, _ end: Int64) { all.append((line, end)) }
    }

    @Test(
        "A task line that is not UTF-8 (in its target or its data) goes to the dead letters, its bytes unchanged",
        arguments: [false, true])
    func invalidUTF8IsDeadLettered(durable: Bool) async throws {
        let folder = Paths.scratch()
        let badTarget: [UInt8] = Array(#"{"targetId": "a"#.utf8) + [0xC3, 0x28] + Array(#"", "data": 1}"#.utf8)
        let badData: [UInt8] = Array(#"{"targetId": "b", "data": "x"#.utf8) + [0xFF] + Array(#""}"#.utf8)
        var input = Array(#"{"targetId": "a", "data": 0}"#.utf8) + [10]
        input += badTarget + [10] + badData + [10]
        input += Array(#"{"targetId": "b", "data": "é"}"#.utf8) + [10]
        try Data(input).write(to: URL(fileURLWithPath: folder + "/tasks.jsonl"))
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: echo }
            results: { path: \(folder)/results.jsonl }
            deadLetter: { path: \(folder)/dead.jsonl }
            """ + (durable ? "\nqueue: { path: \(folder)/queue.db }\n" : "\n"), in: folder)
        #expect(run.summary.succeeded == 2, "\(run)")
        #expect(run.summary.rejected == 2, "\(run)")
        let dead = try P.records(folder + "/dead.jsonl")
        #expect(dead.map { $0["seq"] as? Int } == [2, 3])
        #expect(dead.map { $0["error"] as? String } == ["invalid UTF-8 at byte 16", "invalid UTF-8 at byte 29"])
        #expect(
            dead.map { ($0["inputBase64"] as? String).flatMap { Data(base64Encoded: $0) } } == [
                Data(badTarget), Data(badData),
            ])
        #expect(dead.allSatisfy { $0["input"] == nil })
        let results = try P.records(folder + "/results.jsonl")
        #expect(results.map { $0["seq"] as? Int } == [1, 4])
        #expect(!(try String(contentsOfFile: folder + "/results.jsonl", encoding: .utf8)).contains("\u{FFFD}"))
    }

    @Test("taskhost enqueue dead-letters a line that is not UTF-8 with its bytes, and queues the others")
    func enqueueInvalidUTF8() throws {
        let folder = Paths.scratch()
        let text = """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: \(folder)/tasks.jsonl, executor: echo }
            deadLetter: { path: \(folder)/dead.jsonl }
            queue: { path: \(folder)/queue.db }
            """
        let config = try ConfigLoader.parse(text, file: folder + "/pipeline.yaml", environment: [:])
        let bad: [UInt8] = Array(#"{"targetId": "x", "data": ""#.utf8) + [0xF0, 0x9F, 0x98] + Array(#""}"#.utf8)
        let input = Array(#"{"targetId": "a", "data": 1}"#.utf8) + [10, 10] + bad + [13, 10]
        let report = try QueueAdmin(config: config).enqueue(bytes: input, source: nil)
        #expect(report.accepted == 1)
        #expect(report.rejected.map(\.0) == [3])
        #expect(report.rejected.map(\.1) == ["invalid UTF-8 at byte 28"])
        let dead = try P.records(folder + "/dead.jsonl")
        #expect(dead.count == 1)
        #expect((dead.first?["inputBase64"] as? String).flatMap { Data(base64Encoded: $0) } == Data(bad))
    }

    // MARK: Duplicated keys in the configuration

    @Test(
        "A duplicated key is reported at the duplicate's line and column, with its key path and the first's line",
        arguments: [
            (
                "pipeline.yaml",
                "executors:\n  echo:\n    plugin: Echo\n  other: { plugin: Echo }\n  echo:\n    plugin: Echo\nsources:\n  a: { kind: stdin, executor: echo }\n",
                "pipeline.yaml:5:3: executors.echo: duplicate key 'echo' (first at line 2; keep one)"
            ),
            (
                "pipeline.yaml",
                "executors:\n  echo:\n    plugin: Echo\n    config: { delayMs: 1, \"delayMs\": 2 }\nsources:\n  a: { kind: stdin, executor: echo }\n",
                "pipeline.yaml:4:27: executors.echo.config.delayMs: duplicate key 'delayMs' (first at line 4; keep one)"
            ),
            (
                "pipeline.yaml",
                "executors:\n  echo: { plugin: Echo }\nsources:\n  a: { kind: stdin, executor: echo }\nsources:\n  b: { kind: stdin, executor: echo }\n",
                "pipeline.yaml:5:1: sources: duplicate key 'sources' (first at line 3; keep one)"
            ),
            (
                "pipeline.json",
                "{\"executors\": {\"echo\": {\"plugin\": \"Echo\"}},\n \"sources\": {\"a\": {\"kind\": \"stdin\", \"executor\": \"echo\", \"kind\": \"file\"}}}\n",
                "pipeline.json:2:57: sources.a.kind: duplicate key 'kind' (first at line 2; keep one)"
            ),
        ])
    func duplicateKeys(file: String, text: String, expected: String) {
        #expect(throws: ConfigError.self) { try ConfigLoader.parse(text, file: file, environment: [:]) }
        do {
            _ = try ConfigLoader.parse(text, file: file, environment: [:])
        } catch {
            #expect(error.description == expected)
        }
    }

    // MARK: A function executor's missing library

    @Test(
        "A function executor whose library does not exist names where it looked, and suggests no plugin build",
        arguments: [
            ("no_such_library_x", ["no library named 'no_such_library_x'", "looked for libno_such_library_x.so"]),
            ("/nonexistent/libgone.so", ["no library at /nonexistent/libgone.so"]),
            ("lib/libgone.so", ["no library at /", "/lib/libgone.so (lib/libgone.so)"]),
        ])
    func missingLibrary(library: String, expected: [String]) throws {
        let text = """
            executors:
              f: { library: "\(library)", function: f, signature: "int32()" }
            sources:
              a: { kind: stdin, executor: f }
            """
        let config = try ConfigLoader.parse(text, file: "pipeline.yaml", environment: [:])
        do {
            _ = try buildPipeline(configuration: config, loader: loader(), logger: LogRecorder().logger)
            Issue.record("the pipeline was built")
        } catch {
            #expect(error.description.hasPrefix("pipeline.yaml:2:17: executors.f.library: "), "\(error)")
            for part in expected { #expect(error.description.contains(part), "\(error)") }
            #expect(!error.description.contains("swift build"), "\(error)")
            #expect(!error.description.contains("Build it"), "\(error)")
            #expect(!error.description.contains("plugin first"), "\(error)")
        }
    }

    // MARK: uint64 over its whole range

    @Test("JSON integers beyond Int64 keep their exact text")
    func bigIntegers() throws {
        guard
            case .object(let object) = try JSONParser.parse(
                #"{"a": 18446744073709551615, "b": -9223372036854775809, "c": 9223372036854775807, "d": 1e3}"#)
        else {
            Issue.record("not an object")
            return
        }
        guard case .bigInteger(let a) = object["a"], case .bigInteger(let b) = object["b"],
            case .integer(let c) = object["c"], case .number(let d) = object["d"]
        else {
            Issue.record("\(object)")
            return
        }
        #expect(a == "18446744073709551615")
        #expect(b == "-9223372036854775809")
        #expect(c == Int64.max)
        #expect(d == 1000)
    }

    @Test(
        "A uint64 argument takes 0 to UInt64.max exactly; beyond it, and below 0, it is refused with the range",
        arguments: [
            ("0", "0"), ("18446744073709551615", "18446744073709551615"),
            ("9223372036854775808", "9223372036854775808"),
            ("9223372036854775807", "9223372036854775807"),
        ])
    func unsignedInRange(number: String, passed: String) throws {
        let function = try FFIFunctionExecutor(
            library: Paths.plugin("pricing"), symbol: "pricing_format_u64", signature: "string(uint64)",
            arguments: ["$.data.n"])
        let output = try function.call(TaskItem(targetId: "t", payload: #"{"n": \#(number)}"#))
        #expect(output == passed)
    }

    @Test(
        "A uint64 argument out of range is refused, not retried, with a reason that names it",
        arguments: [
            (
                "18446744073709551616",
                "argument 1 ($.data.n): 18446744073709551616 does not fit uint64 (0 to 18446744073709551615)"
            ),
            ("-1", "argument 1 ($.data.n): -1 does not fit uint64 (0 to 18446744073709551615)"),
            (
                "-92233720368547758090",
                "argument 1 ($.data.n): -92233720368547758090 does not fit uint64 (0 to 18446744073709551615)"
            ),
            ("1.5", "argument 1 ($.data.n): expected an integer for uint64, got a number"),
        ])
    func unsignedOutOfRange(number: String, reason: String) throws {
        let function = try FFIFunctionExecutor(
            library: Paths.plugin("pricing"), symbol: "pricing_format_u64", signature: "string(uint64)",
            arguments: ["$.data.n"])
        do {
            _ = try function.call(TaskItem(targetId: "t", payload: #"{"n": \#(number)}"#))
            Issue.record("called with \(number)")
        } catch let error as NonRetryableError {
            #expect("\(error.underlying)" == reason)
        }
    }

    @Test("An int64 argument given an integer beyond Int64 says it does not fit")
    func signedBeyondRange() throws {
        let function = try FFIFunctionExecutor(
            library: Paths.plugin("pricing"), symbol: "pricing_reprice", signature: "int32(string, int64)",
            arguments: ["$.data.sku", "$.data.cents"])
        do {
            _ = try function.call(TaskItem(targetId: "t", payload: #"{"sku": "A", "cents": 9223372036854775808}"#))
            Issue.record("called")
        } catch let error as NonRetryableError {
            #expect("\(error.underlying)" == "argument 2 ($.data.cents): 9223372036854775808 does not fit int64")
        }
    }
}
