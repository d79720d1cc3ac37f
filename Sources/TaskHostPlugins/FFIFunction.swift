import CTaskHostFFI
import FoundationEssentials
import TaskHostJSON
import TaskHostScheduler

#if canImport(Glibc)
    import Glibc
#endif

/// A C type of a function signature given in configuration.
package enum FFIType: String, Sendable, CaseIterable {
    case void, bool, int8, uint8, int16, uint16, int32, uint32, int64, uint64, float, double, string
    /// A byte buffer: passed as two C arguments, `const uint8_t *` and `uint64_t` length.
    case bytes

    package var ffiTypes: [UnsafeMutablePointer<ffi_type>] {
        switch self {
        case .void: return [th_ffi_void()]
        case .bool, .uint8: return [th_ffi_uint8()]
        case .int8: return [th_ffi_sint8()]
        case .int16: return [th_ffi_sint16()]
        case .uint16: return [th_ffi_uint16()]
        case .int32: return [th_ffi_sint32()]
        case .uint32: return [th_ffi_uint32()]
        case .int64: return [th_ffi_sint64()]
        case .uint64: return [th_ffi_uint64()]
        case .float: return [th_ffi_float()]
        case .double: return [th_ffi_double()]
        case .string: return [th_ffi_pointer()]
        case .bytes: return [th_ffi_pointer(), th_ffi_uint64()]
        }
    }
}

/// A parsed signature: `int32(string, int64)`.
package struct FFISignature: Sendable, Equatable {
    package var returns: FFIType
    package var arguments: [FFIType]

    package init(returns: FFIType, arguments: [FFIType]) {
        self.returns = returns
        self.arguments = arguments
    }

    /// Parses `RETURN(ARG, ARG, ...)`; throws a message naming the bad part.
    package init(parsing text: String) throws(FFIError) {
        let trimmed = text.filter { !$0.isWhitespace }
        guard let open = trimmed.firstIndex(of: "("), trimmed.last == ")" else {
            throw FFIError(
                "signature '\(text)' is not of the form return(arg, ...), for example \"int32(string, int64)\"")
        }
        let known = FFIType.allCases.filter { $0 != .bytes }.map(\.rawValue).joined(separator: ", ")
        let returnName = String(trimmed[..<open])
        guard let returns = FFIType(rawValue: returnName), returns != .bytes else {
            throw FFIError("signature '\(text)': unknown return type '\(returnName)' (one of: \(known))")
        }
        let inner = trimmed[trimmed.index(after: open)..<trimmed.index(before: trimmed.endIndex)]
        var arguments: [FFIType] = []
        if !inner.isEmpty, inner != "void" {
            for (index, name) in inner.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
                guard let type = FFIType(rawValue: String(name)), type != .void else {
                    throw FFIError(
                        "signature '\(text)': argument \(index + 1) has unknown type '\(name)' (one of: \(known))")
                }
                arguments.append(type)
            }
        }
        self.returns = returns
        self.arguments = arguments
    }
}

package struct FFIError: Error, CustomStringConvertible, Sendable {
    package var description: String
    package init(_ description: String) { self.description = description }
}

/// Calls a plain exported C function of an existing library through libffi, one call per task.
///
/// The library is opened once and never closed; the call interface (`ffi_cif`) is prepared once.
/// Each argument comes from a JSON path into the task seen as `{"targetId", "id", "data"}`,
/// where `data` is the task's payload parsed as JSON (parsed only when an argument reads it).
/// An integer or bool return is a status (0, or true, is success); a string return is the output
/// (NULL is a failure); float and double returns are outputs.
///
/// - Important: The function is called concurrently for tasks of different targets; it must be
///   thread-safe for that. It runs inline on the scheduler's path, so it must not block for long.
package final class FFIFunctionExecutor: TaskItemExecutor, @unchecked Sendable {
    package typealias Payload = String

    package let library: String
    package let symbol: String
    package let signature: FFISignature
    package let arguments: [JSONPath]
    package let function: UnsafeMutableRawPointer
    package let cif: UnsafeMutablePointer<ffi_cif>
    package let argumentTypes: UnsafeMutablePointer<UnsafeMutablePointer<ffi_type>?>
    package let cArgumentCount: Int
    /// Where each argument's path starts, resolved once: most read the payload, the target id or
    /// the task id, and need no document around them.
    package let roots: [ArgumentRoot]
    /// Whether some argument reads the payload, which is then parsed as JSON.
    package let readsData: Bool
    package let outputs: (@Sendable (TaskItem<String>, ExecutionContext, String?) -> Void)?

    /// Opens `library`, resolves `symbol`, parses `signature` and `arguments`, prepares the cif.
    /// - Throws: ``PluginError`` naming the library, symbol, signature or argument at fault.
    package init(
        library: String, symbol: String, signature text: String, arguments: [String],
        outputs: (@Sendable (TaskItem<String>, ExecutionContext, String?) -> Void)? = nil
    ) throws(PluginError) {
        let signature: FFISignature
        do {
            signature = try FFISignature(parsing: text)
        } catch {
            throw PluginError(
                .invalidSignature, path: library, message: error.description,
                remedy: "Write the signature as return(arg, ...) with the types of the C declaration.")
        }
        guard arguments.count == signature.arguments.count else {
            throw PluginError(
                .invalidArgument, path: library,
                message:
                    "\(symbol) takes \(signature.arguments.count) argument\(signature.arguments.count == 1 ? "" : "s") "
                    + "in '\(text)' but \(arguments.count) \(arguments.count == 1 ? "is" : "are") given",
                remedy: "Give one JSON path (like $.data.sku) per argument of the signature.")
        }
        var paths: [JSONPath] = []
        for (index, argument) in arguments.enumerated() {
            do {
                paths.append(try JSONPath(parsing: argument))
            } catch {
                throw PluginError(
                    .invalidArgument, path: library, message: "argument \(index + 1): \(error.description)",
                    remedy: "Use a JSON path into the task, like $.data.sku or $.targetId.")
            }
        }
        let handle: UnsafeMutableRawPointer
        switch DynamicLibrary.open(library) {
        case .success(let opened): handle = opened
        case .failure(let failure): throw PluginLoader.openError(path: library, dlerror: failure.message)
        }
        switch DynamicLibrary.symbol(symbol, in: handle) {
        case .success(let address): function = address
        case .failure(let failure):
            throw PluginError(
                .missingFunction, path: library, message: "no exported function '\(symbol)' (\(failure.message))",
                remedy: "Check the name with `nm -D \(library)`; C++ functions need extern \"C\".")
        }
        let cTypes = signature.arguments.flatMap(\.ffiTypes)
        cArgumentCount = cTypes.count
        argumentTypes = .allocate(capacity: max(1, cTypes.count))
        for (index, type) in cTypes.enumerated() { argumentTypes[index] = type }
        cif = .allocate(capacity: 1)
        let status = ffi_prep_cif(
            cif, th_ffi_default_abi(), UInt32(cTypes.count), signature.returns.ffiTypes[0], argumentTypes)
        guard status == FFI_OK else {
            throw PluginError(
                .invalidSignature, path: library, message: "libffi refused the signature '\(text)' (status \(status))",
                remedy: "Check the signature against the C declaration of \(symbol).")
        }
        self.library = library
        self.symbol = symbol
        self.signature = signature
        self.arguments = paths
        self.outputs = outputs
        roots = paths.map(ArgumentRoot.init)
        readsData = roots.contains { $0 == .data || $0 == .document }
    }

    package enum ArgumentRoot {
        /// `$.data...`: evaluated from the second step on the parsed payload.
        case data
        case targetId
        case id
        /// Anything else (`$`, `$.other`): evaluated on the whole `{"targetId", "id", "data"}`.
        case document

        package init(_ path: JSONPath) {
            switch path.steps.first {
            case .key("data"): self = .data
            case .key("targetId") where path.steps.count == 1: self = .targetId
            case .key("id") where path.steps.count == 1: self = .id
            default: self = .document
            }
        }
    }

    package var supportsImmediateExecution: Bool { true }

    package func executeImmediately(_ task: TaskItem<String>, context: ExecutionContext) -> ImmediateOutcome {
        do {
            let output = try call(task, formatting: outputs != nil)
            outputs?(task, context, output)
            return .succeeded
        } catch {
            return .failed(error)
        }
    }

    package func execute(_ task: TaskItem<String>, context: ExecutionContext) async throws {
        let output = try call(task)
        outputs?(task, context, output)
    }

    /// The failure of one call: a conversion error (not retryable) or the function's status.
    package struct CallFailure: Error, CustomStringConvertible, Sendable {
        package var description: String
    }

    /// One call for `task`; returns the output. Without `formatting`, a float, double or string
    /// return is checked but not rendered (nobody reads it).
    package func call(_ task: TaskItem<String>, formatting: Bool = true) throws -> String? {
        // Scalars live in 8-byte slots; strings and bytes in C buffers freed after the call.
        try withUnsafeTemporaryAllocation(byteCount: max(1, cArgumentCount) * 8, alignment: 8) { slots in
            try withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer?.self, capacity: max(1, cArgumentCount)) {
                try call(task, slots: slots.baseAddress!, values: $0.baseAddress!, formatting: formatting)
            }
        }
    }

    private func call(
        _ task: TaskItem<String>, slots: UnsafeMutableRawPointer,
        values: UnsafeMutablePointer<UnsafeMutableRawPointer?>,
        formatting: Bool
    ) throws -> String? {
        var data: JSONValue?
        if readsData {
            do {
                data = try JSONParser.parse(task.payload)
            } catch {
                throw NonRetryableError(
                    CallFailure(description: "the task's data is not JSON: \(task.payload.prefix(80))"))
            }
        }
        let targetId: JSONValue
        switch task.targetId {
        case .integer(let value): targetId = .integer(value)
        case .string(let value): targetId = .string(value)
        }
        func argument(_ index: Int) -> JSONValue? {
            switch roots[index] {
            case .data: return data.flatMap { arguments[index].evaluate($0, from: 1) }
            case .targetId: return targetId
            case .id: return task.id.map { .string($0) }
            case .document:
                var document: [String: JSONValue] = ["targetId": targetId]
                if let data { document["data"] = data }
                if let id = task.id { document["id"] = .string(id) }
                return arguments[index].evaluate(.object(document))
            }
        }
        var buffers: [UnsafeMutableRawPointer] = []
        defer { for buffer in buffers { free(buffer) } }
        var slot = 0
        func next() -> UnsafeMutableRawPointer {
            let pointer = slots + slot * 8
            values[slot] = pointer
            slot += 1
            return pointer
        }
        for (index, (type, path)) in zip(signature.arguments, arguments).enumerated() {
            guard let value = argument(index) else {
                throw NonRetryableError(
                    CallFailure(description: "argument \(index + 1) (\(path.text)): the task has no such field"))
            }
            func mismatch(_ expected: String) -> NonRetryableError {
                NonRetryableError(
                    CallFailure(
                        description: "argument \(index + 1) (\(path.text)): expected \(expected) for \(type.rawValue), "
                            + "got \(value.kind)"))
            }
            func doesNotFit(_ number: String) -> NonRetryableError {
                NonRetryableError(
                    CallFailure(
                        description: "argument \(index + 1) (\(path.text)): \(number) does not fit \(type.rawValue)"
                            + (type == .uint64 ? " (0 to \(UInt64.max))" : "")))
            }
            func integer(_ range: ClosedRange<Int64>) throws -> Int64 {
                if case .bigInteger(let text) = value { throw doesNotFit(text) }
                guard case .integer(let number) = value else { throw mismatch("an integer") }
                guard range.contains(number) else { throw doesNotFit(String(number)) }
                return number
            }
            /// The whole range of uint64: beyond Int64 the parser kept the number's text.
            func unsigned() throws -> UInt64 {
                switch value {
                case .integer(let number) where number >= 0: return UInt64(number)
                case .integer(let number): throw doesNotFit(String(number))
                case .bigInteger(let text):
                    guard let number = UInt64(text) else { throw doesNotFit(text) }
                    return number
                default: throw mismatch("an integer")
                }
            }
            switch type {
            case .void: break
            case .bool:
                guard case .bool(let flag) = value else { throw mismatch("true or false") }
                next().storeBytes(of: UInt8(flag ? 1 : 0), as: UInt8.self)
            case .int8: next().storeBytes(of: Int8(try integer(Int64(Int8.min)...Int64(Int8.max))), as: Int8.self)
            case .uint8: next().storeBytes(of: UInt8(try integer(0...Int64(UInt8.max))), as: UInt8.self)
            case .int16: next().storeBytes(of: Int16(try integer(Int64(Int16.min)...Int64(Int16.max))), as: Int16.self)
            case .uint16: next().storeBytes(of: UInt16(try integer(0...Int64(UInt16.max))), as: UInt16.self)
            case .int32: next().storeBytes(of: Int32(try integer(Int64(Int32.min)...Int64(Int32.max))), as: Int32.self)
            case .uint32: next().storeBytes(of: UInt32(try integer(0...Int64(UInt32.max))), as: UInt32.self)
            case .int64: next().storeBytes(of: try integer(Int64.min...Int64.max), as: Int64.self)
            case .uint64: next().storeBytes(of: try unsigned(), as: UInt64.self)
            case .float, .double:
                let number: Double
                switch value {
                case .integer(let n): number = Double(n)
                case .bigInteger(let text): number = Double(text) ?? .infinity
                case .number(let n): number = n
                default: throw mismatch("a number")
                }
                if type == .float {
                    // A finite number beyond float's range would arrive as infinity.
                    guard abs(number) <= Double(Float.greatestFiniteMagnitude) else {
                        throw NonRetryableError(
                            CallFailure(
                                description: "argument \(index + 1) (\(path.text)): \(number) does not fit float"))
                    }
                    next().storeBytes(of: Float(number), as: Float.self)
                } else {
                    next().storeBytes(of: number, as: Double.self)
                }
            case .string, .bytes:
                guard case .string(let text) = value else { throw mismatch("a string") }
                let utf8 = Array(text.utf8)
                if type == .string, utf8.contains(0) {
                    throw NonRetryableError(
                        CallFailure(description: "argument \(index + 1) (\(path.text)): the string contains NUL"))
                }
                let buffer = malloc(utf8.count + 1)!
                buffers.append(buffer)
                utf8.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                buffer.storeBytes(of: 0, toByteOffset: utf8.count, as: UInt8.self)
                next().storeBytes(of: buffer, as: UnsafeMutableRawPointer.self)
                if type == .bytes { next().storeBytes(of: UInt64(utf8.count), as: UInt64.self) }
            }
        }
        // The return buffer is at least sizeof(ffi_arg): narrow integer returns are widened.
        var result: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &result) { returned in
            ffi_call(cif, unsafeBitCast(function, to: (@convention(c) () -> Void).self), returned.baseAddress, values)
        }
        return try withUnsafeBytes(of: &result) { returned -> String? in
            func status(_ code: Int64) throws -> String? {
                if code == 0 { return nil }
                throw CallFailure(description: "\(symbol) returned \(code)")
            }
            switch signature.returns {
            case .void: return nil
            case .bool:
                if returned.load(as: UInt8.self) != 0 { return nil }
                throw CallFailure(description: "\(symbol) returned false")
            case .int8, .int16, .int32:
                return try status(Int64(Int32(truncatingIfNeeded: returned.load(as: Int64.self))))
            case .uint8: return try status(Int64(returned.load(as: UInt8.self)))
            case .uint16: return try status(Int64(returned.load(as: UInt16.self)))
            case .uint32: return try status(Int64(returned.load(as: UInt32.self)))
            case .int64: return try status(returned.load(as: Int64.self))
            case .uint64:
                let code = returned.load(as: UInt64.self)
                if code == 0 { return nil }
                throw CallFailure(description: "\(symbol) returned \(code)")
            case .float: return formatting ? String(returned.load(as: Float.self)) : nil
            case .double: return formatting ? String(returned.load(as: Double.self)) : nil
            case .string:
                guard let pointer = returned.load(as: UnsafePointer<CChar>?.self) else {
                    throw CallFailure(description: "\(symbol) returned NULL")
                }
                return formatting ? String(validatingCString: pointer) ?? "" : nil
            case .bytes: return nil
            }
        }
    }
}

extension FFIFunctionExecutor: AnsweringExecutor {
    package func answerImmediately(_ task: TaskItem<String>, context: ExecutionContext) -> Answer {
        do {
            return .output(try call(task))
        } catch {
            return .failed(error)
        }
    }

    package func answer(_ task: TaskItem<String>, context: ExecutionContext) async throws -> String? {
        try call(task)
    }
}
