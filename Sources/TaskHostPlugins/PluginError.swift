import TaskHostJSON

/// An error of the plugin host: what failed, where, and what to do about it.
package struct PluginError: Error, CustomStringConvertible, Sendable, Equatable {
    package enum Code: String, Sendable {
        case notFound
        case notASharedLibrary
        case missingEntrySymbol
        case abiTooNew
        case abiTooOld
        case invalidTable
        case halfImplementedCapability
        case insecurePermissions
        case invalidConfiguration
        case createFailed
        case invalidSignature
        case missingSymbol
        /// A function executor's function is not exported by its library.
        case missingFunction
        case invalidArgument
    }

    package var code: Code
    /// The plugin file, library or configuration at fault.
    package var path: String
    /// What went wrong, naming the symbol, version or key at fault.
    package var message: String
    /// What to do next.
    package var remedy: String

    package init(_ code: Code, path: String, message: String, remedy: String) {
        self.code = code
        self.path = path
        self.message = message
        self.remedy = remedy
    }

    package var description: String { "\(path): \(message). \(remedy)" }
}
