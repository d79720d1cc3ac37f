import Foundation
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostStore
import Testing

@testable import TaskHostRuntime

/// libffi calls into the plain C library built from Plugins/Pricing, which knows nothing of TaskHost.
@Suite(.serialized) struct FFIFunctionTests {
    let library = Paths.plugin("pricing")

    func call(
        _ symbol: String, _ signature: String, _ arguments: [String], payload: String, target: TargetID = "t"
    ) throws -> Result<String?, any Error> {
        let function = try FFIFunctionExecutor(
            library: library, symbol: symbol, signature: signature, arguments: arguments)
        return Result { try function.call(TaskItem(targetId: target, payload: payload)) }
    }

    @Test("Signatures parse into types; bad ones name the part at fault")
    func signatures() throws {
        let parsed = try FFISignature(parsing: "int32(string, int64)")
        #expect(parsed == FFISignature(returns: .int32, arguments: [.string, .int64]))
        #expect(try FFISignature(parsing: "void()").arguments.isEmpty)
        #expect(try FFISignature(parsing: "double ( double , float )").arguments == [.double, .float])
        #expect(throws: FFIError.self) { try FFISignature(parsing: "int32(strnig)") }
        do {
            _ = try FFISignature(parsing: "int33(string)")
        } catch {
            #expect(error.description.contains("unknown return type 'int33'"))
        }
        do {
            _ = try FFISignature(parsing: "int32 string")
        } catch {
            #expect(error.description.contains("return(arg, ...)"))
        }
    }

    @Test("An integer status: 0 succeeds, anything else fails with the code")
    func integerStatus() throws {
        let ok = try call(
            "pricing_reprice", "int32(string, int64)", ["$.data.sku", "$.data.cents"],
            payload: #"{"sku": "ABC-1234", "cents": 1999}"#)
        #expect(try ok.get() == nil)
        let bad = try call(
            "pricing_reprice", "int32(string, int64)", ["$.data.sku", "$.data.cents"],
            payload: #"{"sku": "ABC-1234", "cents": -5}"#)
        #expect(throws: FFIFunctionExecutor.CallFailure.self) { try bad.get() }
        #expect("\(bad)".contains("returned 3"))
    }

    @Test("Floats, doubles, bools, strings and byte buffers cross correctly")
    func types() throws {
        let discounted = try call(
            "pricing_apply_discount", "double(double, float)", ["$.data.price", "$.data.percent"],
            payload: #"{"price": 200, "percent": 25}"#)
        #expect(try discounted.get() == "150.0")
        let valid = try call("pricing_is_valid_sku", "bool(string)", ["$.data"], payload: #""ABC-1234""#)
        #expect(try valid.get() == nil)
        let invalid = try call("pricing_is_valid_sku", "bool(string)", ["$.data"], payload: #""abc""#)
        #expect("\(invalid)".contains("returned false"))
        let described = try call(
            "pricing_describe", "string(string)", ["$.targetId"], payload: "{}", target: "XYZ-0001")
        #expect(try described.get()?.contains("XYZ-0001") == true)
        // Adler-32 of "Wikipedia" is 0x11E60398; the function returns it as int32, a nonzero status.
        let checksum = try call("pricing_checksum", "int32(bytes)", ["$.data.text"], payload: #"{"text": "Wikipedia"}"#)
        #expect("\(checksum)".contains("returned \(Int32(bitPattern: 0x11E6_0398))"))
    }

    @Test("Arguments come from the payload, the target id, the task id or the whole task")
    func argumentRoots() throws {
        func describe(_ path: String, payload: String, id: String? = nil) throws -> Result<String?, any Error> {
            let function = try FFIFunctionExecutor(
                library: library, symbol: "pricing_describe", signature: "string(string)", arguments: [path])
            return Result { try function.call(TaskItem(targetId: "XYZ-0001", payload: payload, id: id)) }
        }
        // The task id, a nested path through the whole task, and the target id.
        #expect(try describe("$.id", payload: "{}", id: "ABC-1234").get()?.contains("ABC-1234") == true)
        #expect(try describe("$.data.sku", payload: #"{"sku": "DEF-5678"}"#).get()?.contains("DEF-5678") == true)
        let whole = try describe("$.targetId", payload: "not json")
        #expect(try whole.get()?.contains("XYZ-0001") == true, "a payload no argument reads is not parsed")
        // A path that starts elsewhere is read from {"targetId", "id", "data"}.
        let wholeDocument = try FFIFunctionExecutor(
            library: library, symbol: "pricing_apply_discount", signature: "double(double, float)",
            arguments: ["$.data.price", "$"])
        #expect(throws: NonRetryableError.self) {
            try wholeDocument.call(TaskItem(targetId: "t", payload: #"{"price": 200}"#))
        }
        // A missing task id and a payload that is not JSON are conversion errors.
        #expect(throws: NonRetryableError.self) { try describe("$.id", payload: "{}").get() }
        #expect(throws: NonRetryableError.self) { try describe("$.data.sku", payload: "not json").get() }
    }

    @Test("Configuration errors: unknown symbol, wrong argument count, bad path, not a library")
    func configurationErrors() {
        let missing = loadError {
            _ = try FFIFunctionExecutor(
                library: library, symbol: "no_such_function", signature: "int32()", arguments: [])
        }
        #expect(missing?.code == .missingFunction)
        #expect(missing?.message.contains("no_such_function") == true)
        let count = loadError {
            _ = try FFIFunctionExecutor(
                library: library, symbol: "pricing_reprice", signature: "int32(string, int64)",
                arguments: ["$.data.sku"])
        }
        #expect(count?.code == .invalidArgument)
        #expect(count?.message.contains("takes 2 arguments") == true)
        let path = loadError {
            _ = try FFIFunctionExecutor(
                library: library, symbol: "pricing_reprice", signature: "int32(string, int64)",
                arguments: ["data.sku", "$.data.cents"])
        }
        #expect(path?.code == .invalidArgument)
        #expect(path?.message.contains("start it with $") == true)
        let signature = loadError {
            _ = try FFIFunctionExecutor(
                library: library, symbol: "pricing_reprice", signature: "int32(sting)", arguments: ["$"])
        }
        #expect(signature?.code == .invalidSignature)
    }

    @Test("A task whose fields do not convert is refused without calling, and not retried")
    func conversionErrors() throws {
        let function = try FFIFunctionExecutor(
            library: library, symbol: "pricing_reprice", signature: "int32(string, int64)",
            arguments: ["$.data.sku", "$.data.cents"])
        let before = try call("pricing_calls", "int64()", [], payload: "{}")
        let cases = [
            (#"{"sku": "ABC-1234", "cents": "many"}"#, "expected an integer for int64, got a string"),
            (#"{"cents": 5}"#, "argument 1 ($.data.sku): the task has no such field"),
            ("not json", "the task's data is not JSON"),
        ]
        for (payload, message) in cases {
            do {
                _ = try function.call(TaskItem(targetId: "t", payload: payload))
                Issue.record("\(payload) was accepted")
            } catch let error as NonRetryableError {
                #expect("\(error.underlying)".contains(message), "\(error)")
            }
        }
        let after = try call("pricing_calls", "int64()", [], payload: "{}")
        // pricing_calls counts reprice calls only: none of the refused tasks reached the function.
        #expect("\(before)" == "\(after)")
        // A number beyond float's range is refused, not passed as infinity.
        let discount = try FFIFunctionExecutor(
            library: library, symbol: "pricing_apply_discount", signature: "double(double, float)",
            arguments: ["$.data.price", "$.data.pct"])
        #expect(throws: NonRetryableError.self) {
            _ = try discount.call(TaskItem(targetId: "t", payload: #"{"price": 100, "pct": 1e40}"#))
        }
        #expect(try discount.call(TaskItem(targetId: "t", payload: #"{"price": 100, "pct": 10}"#)) != nil)
    }

    @Test("Under the scheduler: each task is one call, failures dead-letter with the reason")
    func underScheduler() async throws {
        let function = try FFIFunctionExecutor(
            library: library, symbol: "pricing_reprice", signature: "int32(string, int64)",
            arguments: ["$.data.sku", "$.data.cents"])
        let tasks = (0..<50).map {
            TaskItem(
                targetId: .integer(Int64($0 % 5)), payload: #"{"sku": "SKU-\#($0)", "cents": \#($0 == 7 ? -1 : $0)}"#)
        }
        let summary = await run(executor: function, tasks: TaskList(tasks), maxConcurrency: 4)
        #expect(summary.succeeded == 49)
        #expect(summary.deadLettered == 1)
    }
}
