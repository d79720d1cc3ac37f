import TaskHostJSON

/// An error of the plugin host: what failed, where, and what to do about it.
public struct PluginError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
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

    public var code: Code
    /// The plugin file, library or configuration at fault.
    public var path: String
    /// What went wrong, naming the symbol, version or key at fault.
    public var message: String
    /// What to do next.
    public var remedy: String

    public init(_ code: Code, path: String, message: String, remedy: String) {
        self.code = code
        self.path = path
        self.message = message
        self.remedy = remedy
    }

    public var description: String { "\(path): \(message). \(remedy)" }
}
