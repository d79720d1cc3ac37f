import CTaskHostPlugin
import Foundation
import Logging
import TaskHostJSON

#if canImport(Glibc)
    import Glibc
#endif

/// Finds and loads executor plugins: shared libraries exporting `taskhost_plugin_entry`.
///
/// A plugin is named by path (anything with a `/` or ending in `.so`) or by name, looked up as
/// `lib<name>.so`, `<name>.so` and `<name>` in each folder of ``searchPath`` in order.
package struct PluginLoader: Sendable {
    /// Folders searched for plugins named without a path, in order.
    package var searchPath: [String]
    /// Load plugin files (or their folders) that group or others may write to.
    package var allowInsecure: Bool

    package init(searchPath: [String], allowInsecure: Bool = false) {
        self.searchPath = searchPath
        self.allowInsecure = allowInsecure
    }

    /// The default search path: `extra` folders (command line, then config) first, then
    /// `TASKHOST_PLUGIN_PATH` (colon-separated), then the folder of the running executable and its
    /// `../lib/taskhost` (where `scripts/install.sh` puts the plugins). Never the current folder's
    /// `.build`: a deployed host loads no code from wherever it happens to be started.
    package static func searchPath(
        extra: [String] = [], environment: [String: String], executableFolder: String? = executableFolder()
    ) -> [String] {
        var folders = extra
        if let path = environment["TASKHOST_PLUGIN_PATH"] {
            folders += path.split(separator: ":").map(String.init).filter { !$0.isEmpty }
        }
        if let executable = executableFolder {
            folders.append(executable)
            folders.append(installedLibraryFolder(executableFolder: executable))
        }
        var seen = Set<String>()
        return folders.filter { seen.insert($0).inserted }
    }

    /// `lib/taskhost` beside the executable's `bin`: `/usr/local/lib/taskhost` for
    /// `/usr/local/bin/taskhost`.
    package static func installedLibraryFolder(executableFolder: String) -> String {
        guard let slash = executableFolder.lastIndex(of: "/") else { return "lib/taskhost" }
        return executableFolder[..<slash] + "/lib/taskhost"
    }

    /// The file a plugin reference names.
    package func resolve(_ reference: String) throws(PluginError) -> String {
        guard !reference.isEmpty else {
            throw PluginError(
                .notFound, path: reference, message: "the plugin's name is empty",
                remedy: "Give a plugin name (like Echo, for libEcho.so) or the path of its .so file.")
        }
        if reference.contains("/") || reference.hasSuffix(".so") {
            guard fileExists(reference) else {
                throw PluginError(
                    .notFound, path: reference, message: "no such file",
                    remedy: "Check the path, or build the plugin first (swift build builds the example plugins).")
            }
            return reference
        }
        for folder in searchPath {
            for candidate in ["lib\(reference).so", "\(reference).so", reference] {
                let path = folder.hasSuffix("/") ? folder + candidate : folder + "/" + candidate
                if fileExists(path) { return path }
            }
        }
        throw PluginError(
            .notFound, path: reference,
            message:
                "no plugin named '\(reference)' (looked for lib\(reference).so, \(reference).so and \(reference) in "
                + (searchPath.isEmpty ? "no folder" : searchPath.joined(separator: ", ")) + ")",
            remedy:
                "Build it (swift build), give its path, or add its folder with --plugin-path or TASKHOST_PLUGIN_PATH.")
    }

    /// Loads a plugin and checks its table: ABI version, required functions, capabilities.
    package func load(_ reference: String) throws(PluginError) -> LoadedPlugin {
        let path = try resolve(reference)
        try checkPermissions(path)
        let handle: UnsafeMutableRawPointer
        switch DynamicLibrary.open(path) {
        case .success(let opened): handle = opened
        case .failure(let failure): throw Self.openError(path: path, dlerror: failure.message)
        }
        let entry: UnsafeMutableRawPointer
        switch DynamicLibrary.symbol(TH_PLUGIN_ENTRY_NAME, in: handle) {
        case .success(let symbol): entry = symbol
        case .failure:
            throw PluginError(
                .missingEntrySymbol, path: path,
                message: "the library does not export the entry symbol \(TH_PLUGIN_ENTRY_NAME)",
                remedy: "Export `const th_plugin *taskhost_plugin_entry(void)` with TH_EXPORT (in Swift: "
                    + "@_cdecl(\"taskhost_plugin_entry\")); `nm -D \(path)` lists what it exports.")
        }
        let function = unsafeBitCast(entry, to: th_plugin_entry_fn.self)
        guard let table = function() else {
            throw PluginError(
                .invalidTable, path: path, message: "\(TH_PLUGIN_ENTRY_NAME)() returned NULL",
                remedy: "Return a pointer to a constant th_plugin table.")
        }
        return try LoadedPlugin(path: path, table: table)
    }

    /// Refuses a library that anyone but its owner could have replaced: the file, and every
    /// folder above it, both along the path as given and along the path its links resolve to,
    /// must not be writable by group or others. A sticky folder above the plugin's own folder
    /// (like /tmp) is allowed: others cannot rename or remove what is in it.
    package func checkPermissions(_ path: String) throws(PluginError) {
        guard !allowInsecure else { return }
        var items = Self.chain(Self.absolute(path))
        if let resolved = realpath(path, nil) {
            items += Self.chain(String(cString: resolved))
            free(resolved)
        }
        var seen = Set<String>()
        for (item, depth) in items where seen.insert(item).inserted {
            var info = stat()
            guard stat(item, &info) == 0, info.st_mode & (S_IWGRP | S_IWOTH) != 0 else { continue }
            if depth > 1, info.st_mode & S_ISVTX != 0 { continue }
            throw PluginError(
                .insecurePermissions, path: path,
                message: "\(depth == 0 ? "the file" : "its folder \(item)") can be written by "
                    + "\(info.st_mode & S_IWOTH != 0 ? "anyone" : "its group") (mode "
                    + String(info.st_mode & 0o7777, radix: 8)
                    + "), so anyone in it could replace the code TaskHost runs",
                remedy: "Run `chmod go-w \(item)`, or pass --allow-insecure-plugins if you trust every writer.")
        }
    }

    /// The path and its folders up to /, each with its depth (0: the file, 1: its folder).
    package static func chain(_ path: String) -> [(String, Int)] {
        var items = [(path, 0)]
        var current = path
        while let slash = current.lastIndex(of: "/") {
            current = slash == current.startIndex ? "/" : String(current[..<slash])
            items.append((current, items.count))
            if current == "/" { break }
        }
        return items
    }

    package static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        guard let cwd = getcwd(nil, 0) else { return path }
        defer { free(cwd) }
        let base = String(cString: cwd)
        return (base == "/" ? "" : base) + "/" + (path.hasPrefix("./") ? String(path.dropFirst(2)) : path)
    }

    package static func openError(path: String, dlerror: String) -> PluginError {
        if dlerror.contains("invalid ELF header") || dlerror.contains("file too short")
            || dlerror.contains("not an ELF") || dlerror.contains("wrong ELF class")
        {
            return PluginError(
                .notASharedLibrary, path: path, message: "not a shared library for this machine (\(dlerror))",
                remedy: "Build the plugin as a shared object for this platform: cc -shared -fPIC ... -o plugin.so")
        }
        if let range = dlerror.firstRange(of: "undefined symbol: ") {
            let symbol = dlerror[range.upperBound...].prefix { $0 != " " && $0 != "," }
            return PluginError(
                .missingSymbol, path: path, message: "the plugin needs symbol \(symbol), which nothing loaded provides",
                remedy: "Link the library that defines \(symbol) into the plugin (check `ldd -r \(path)`).")
        }
        if dlerror.contains("No such file"), dlerror.hasPrefix(path + ":"), access(path, F_OK) == 0 {
            // The file is there, yet dlopen says it is not: glibc's answer for an ELF file of
            // another architecture (a missing dependency would be named instead of the file).
            return PluginError(
                .notASharedLibrary, path: path,
                message: "not a shared library for this machine: dlopen cannot load it (\(dlerror)); "
                    + "it is likely built for another architecture",
                remedy: "Check it with `file \(path)` and build it for this machine (cc -shared -fPIC ...).")
        }
        if dlerror.contains("No such file") {
            return PluginError(
                .notFound, path: path, message: dlerror,
                remedy: "Install the libraries the plugin depends on (check `ldd \(path)`).")
        }
        return PluginError(
            .notASharedLibrary, path: path, message: "dlopen failed: \(dlerror)",
            remedy: "Check that the file is a shared library built for this machine.")
    }
}

/// A plugin whose table passed the load checks. Loaded libraries are never unloaded.
package final class LoadedPlugin: @unchecked Sendable {
    package let path: String
    package let table: UnsafePointer<th_plugin>
    package let name: String
    package let version: String
    package let summary: String?
    package let configSchema: String?
    /// The configuration's top-level keys when the schema lists them and closes the object
    /// (`"additionalProperties": false`); nil otherwise.
    package let closedKeys: Set<String>?
    package let abiMajor: UInt32
    package let abiMinor: UInt32
    /// The optional capabilities the plugin offers, by versioned id.
    package let capabilities: [String]
    /// Whether the plugin checks a configuration without creating an instance.
    package var hasValidate: Bool { table.pointee.validate != nil }

    /// The capability ids this host knows, with the minimal size of their structs.
    package static let knownCapabilities: [(id: String, minimumSize: Int)] = [
        (TH_CAPABILITY_CANCEL_V1, MemoryLayout<th_cancel_v1>.size)
    ]

    package init(path: String, table: UnsafePointer<th_plugin>) throws(PluginError) {
        let plugin = table.pointee
        let hostVersion = "\(TH_ABI_MAJOR).\(TH_ABI_MINOR)"
        let pluginVersion = "\(plugin.abi_major).\(plugin.abi_minor)"
        if plugin.abi_major > TH_ABI_MAJOR || (plugin.abi_major == TH_ABI_MAJOR && plugin.abi_minor > TH_ABI_MINOR) {
            throw PluginError(
                .abiTooNew, path: path,
                message: "built against plugin ABI \(pluginVersion); this host speaks ABI \(hostVersion)",
                remedy: "Upgrade TaskHost, or rebuild the plugin against taskhost_plugin.h version \(hostVersion).")
        }
        if plugin.abi_major < TH_ABI_MAJOR {
            throw PluginError(
                .abiTooOld, path: path,
                message: "built against plugin ABI \(pluginVersion); this host needs ABI \(TH_ABI_MAJOR).x",
                remedy: "Rebuild the plugin against taskhost_plugin.h version \(hostVersion).")
        }
        let requiredSize = MemoryLayout<th_plugin>.offset(of: \th_plugin.get_capability)!
        guard Int(plugin.struct_size) >= requiredSize else {
            throw PluginError(
                .invalidTable, path: path,
                message:
                    "th_plugin.struct_size is \(plugin.struct_size), smaller than the \(requiredSize) bytes of ABI 1.0",
                remedy: "Set struct_size = sizeof(th_plugin) and rebuild against the header.")
        }
        var missing: [String] = []
        if plugin.name == nil { missing.append("name") }
        if plugin.version == nil { missing.append("version") }
        if plugin.create == nil { missing.append("create") }
        if plugin.destroy == nil { missing.append("destroy") }
        if plugin.execute == nil { missing.append("execute") }
        guard missing.isEmpty else {
            throw PluginError(
                .invalidTable, path: path,
                message: "required field\(missing.count > 1 ? "s" : "") "
                    + missing.map { "th_plugin.\($0)" }.joined(separator: ", ") + (missing.count > 1 ? " are" : " is")
                    + " NULL",
                remedy: "Fill every required field of the table (see taskhost_plugin.h).")
        }
        self.path = path
        self.table = table
        name = String(cString: plugin.name)
        version = String(cString: plugin.version)
        summary = plugin.description.map { String(cString: $0) }
        configSchema = plugin.config_schema.map { String(cString: $0) }
        var closed: Set<String>?
        if let schema = configSchema {
            guard case .object(let object) = try? JSONParser.parse(schema) else {
                throw PluginError(
                    .invalidTable, path: path,
                    message: "th_plugin.config_schema is not a JSON object: \(schema.prefix(80))",
                    remedy: "Publish a JSON Schema object (like {\"type\":\"object\",\"properties\":{...}}), or NULL.")
            }
            if case .bool(false) = object["additionalProperties"], case .object(let properties) = object["properties"] {
                closed = Set(properties.keys)
            }
        }
        closedKeys = closed
        abiMajor = plugin.abi_major
        abiMinor = plugin.abi_minor
        var offered: [String] = []
        if let lookup = plugin.get_capability, Int(plugin.struct_size) > requiredSize {
            for (id, minimumSize) in Self.knownCapabilities {
                guard let capability = lookup(nil, id) else { continue }
                if id == TH_CAPABILITY_CANCEL_V1 {
                    let cancel = capability.assumingMemoryBound(to: th_cancel_v1.self).pointee
                    if Int(cancel.struct_size) < minimumSize || cancel.cancel == nil {
                        throw PluginError(
                            .halfImplementedCapability, path: path,
                            message: "capability \(id) is offered but "
                                + (cancel.cancel == nil
                                    ? "th_cancel_v1.cancel is NULL"
                                    : "its th_cancel_v1.struct_size is \(cancel.struct_size), below the \(minimumSize) "
                                        + "bytes of version 1"),
                            remedy: "Implement every function of \(id), or return NULL for it from get_capability.")
                    }
                }
                offered.append(id)
            }
        }
        capabilities = offered
    }

    /// Runs the plugin's own check of a configuration. Returns nil when valid (or when the plugin
    /// has no validate function), else the plugin's message.
    package func validate(configuration json: String) -> String? {
        if let unknown = unknownKey(in: json) { return unknown }
        guard let validate = table.pointee.validate else { return nil }
        var buffer = [CChar](repeating: 0, count: 2048)
        var json = json
        let status = json.withUTF8 { utf8 in
            buffer.withUnsafeMutableBufferPointer { out in
                validate(
                    th_str(
                        ptr: UnsafeRawPointer(utf8.baseAddress)?.assumingMemoryBound(to: CChar.self),
                        len: UInt64(utf8.count)),
                    th_message_buffer(ptr: out.baseAddress, cap: UInt64(out.count)))
            }
        }
        guard status != TH_OK else { return nil }
        let message = cText(buffer)
        return message.isEmpty ? "rejected (\(StatusName.of(status)))" : message
    }

    /// A top-level key that the plugin's schema does not list although it closes the object
    /// (`"additionalProperties": false`): a typo that the plugin itself might silently ignore
    /// (a Swift `Decodable` configuration does). Nil when the schema does not close it.
    package func unknownKey(in json: String) -> String? {
        guard let closedKeys,
            case .object(let config) = try? JSONParser.parse(json),
            let key = config.keys.sorted().first(where: { !closedKeys.contains($0) })
        else { return nil }
        let known = closedKeys.sorted()
        return "unknown key '\(key)'"
            + (suggestion(for: key, among: known).map { ": did you mean '\($0)'?" } ?? "")
            + " (its keys: \(known.joined(separator: ", ")))"
    }

    /// Creates an instance from its configuration.
    /// Creates an instance with `json` as its configuration.
    /// - Parameter onMisbehaviour: told of every ``PluginMisbehaviour`` of the instance, after it is logged.
    package func makeInstance(
        configuration json: String, logger: Logger, onMisbehaviour: (@Sendable (PluginMisbehaviour) -> Void)? = nil
    ) throws(PluginError) -> PluginInstance {
        try PluginInstance(plugin: self, configuration: json, logger: logger, onMisbehaviour: onMisbehaviour)
    }
}

/// Names of the ABI's status codes, for messages.
package enum StatusName {
    package static func of(_ status: Int32) -> String {
        switch status {
        case TH_OK: return "TH_OK"
        case TH_PENDING: return "TH_PENDING"
        case TH_ERROR: return "TH_ERROR"
        case TH_RETRYABLE: return "TH_RETRYABLE"
        case TH_TIMEOUT: return "TH_TIMEOUT"
        case TH_CANCELLED: return "TH_CANCELLED"
        case TH_INVALID_CONFIG: return "TH_INVALID_CONFIG"
        case TH_NOT_SUPPORTED: return "TH_NOT_SUPPORTED"
        case TH_PERMANENT: return "TH_PERMANENT"
        default: return "unknown status \(status)"
        }
    }
}

private func fileExists(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
}

/// The folder of the running executable (from /proc/self/exe, links resolved).
package func executableFolder() -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard count > 0 else { return nil }
    let path = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let slash = path.lastIndex(of: "/") else { return nil }
    return String(path[..<slash])
}

/// The text of a NUL-terminated C buffer.
package func cText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
