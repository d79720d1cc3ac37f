import CTaskHostSystem
import TaskHostJSON

/// The process's dlopen/dlsym calls, and nothing else. Libraries are never closed: a plugin may
/// embed a language runtime (Swift, Go) that cannot be unloaded.
package enum DynamicLibrary {
    package struct Failure: Error {
        package var message: String
    }

    /// Opens a shared library with `RTLD_NOW | RTLD_LOCAL`.
    static func open(_ path: String) -> Result<UnsafeMutableRawPointer, Failure> {
        withErrorBuffer { buffer in th_dlopen(path, buffer, 1024) }
    }

    /// Resolves a symbol of an opened library.
    package static func symbol(_ name: String, in handle: UnsafeMutableRawPointer) -> Result<
        UnsafeMutableRawPointer, Failure
    > {
        withErrorBuffer { buffer in th_dlsym(handle, name, buffer, 1024) }
    }

    /// The file a loaded address belongs to.
    package static func objectPath(containing address: UnsafeRawPointer) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        guard th_object_path(address, &buffer, UInt64(buffer.count)) != 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func withErrorBuffer(
        _ body: (UnsafeMutablePointer<CChar>) -> UnsafeMutableRawPointer?
    ) -> Result<UnsafeMutableRawPointer, Failure> {
        var buffer = [CChar](repeating: 0, count: 1024)
        let result = buffer.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
        if let result { return .success(result) }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return .failure(Failure(message: text))
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `th_task.deadline_ns`.
package func monotonicNanoseconds() -> Int64 { th_monotonic_ns() }
