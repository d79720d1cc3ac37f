import Foundation
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostStore
import Testing

@testable import TaskHostRuntime

/// The loader on real `.so` files: the plugins built from Plugins/ and fixtures compiled with cc.
@Suite struct PluginLoaderTests {
    @Test("The example plugins load by name from the build folder")
    func loadsExamplePlugins() throws {
        let echo = try loader().load("Echo")
        #expect(echo.name == "echo")
        #expect(echo.version == "1.0.0")
        #expect(echo.capabilities == ["taskhost.cancel/1"])
        #expect(echo.configSchema?.contains("delayMs") == true)
        let file = try loader().load("TargetFile")
        #expect(file.name == "target-file")
        #expect(file.hasValidate)
        let command = try loader().load(Paths.plugin("Command"))
        #expect(command.capabilities == ["taskhost.cancel/1"])
    }

    @Test("A missing plugin names the folders searched and what to do")
    func missingPlugin() {
        let error = loadError { _ = try loader().load("NoSuchPlugin") }
        #expect(error?.code == .notFound)
        #expect(error?.description.contains("libNoSuchPlugin.so") == true)
        #expect(error?.description.contains("--plugin-path") == true)
        let byPath = loadError { _ = try loader().load("/nonexistent/libX.so") }
        #expect(byPath?.code == .notFound)
        #expect(byPath?.path == "/nonexistent/libX.so")
    }

    @Test("A file that is not a shared library is refused as such")
    func notASharedLibrary() throws {
        let path = Paths.scratch() + "/libtext.so"
        try "not an ELF file, just text\n".write(toFile: path, atomically: true, encoding: .utf8)
        let error = loadError { _ = try loader().load(path) }
        #expect(error?.code == .notASharedLibrary)
        #expect(error?.description.contains("cc -shared -fPIC") == true)
    }

    @Test("A library without the entry symbol is refused, naming the symbol")
    func missingEntrySymbol() throws {
        let path = try Compiler.fixture("no_entry")
        let error = loadError { _ = try loader().load(path) }
        #expect(error?.code == .missingEntrySymbol)
        #expect(error?.message.contains("taskhost_plugin_entry") == true)
        #expect(error?.remedy.contains("nm -D") == true)
    }

    @Test("ABI versions: a newer major or minor is refused with both versions and the fix")
    func abiVersions() throws {
        let major = loadError { _ = try loader().load(try! Compiler.fixture("wrong_abi")) }
        #expect(major?.code == .abiTooNew)
        #expect(major?.message.contains("ABI 2.0") == true)
        #expect(major?.message.contains("ABI 1.0") == true)
        #expect(major?.remedy.contains("rebuild") == true)
        let minor = loadError { _ = try loader().load(try! Compiler.fixture("newer_minor")) }
        #expect(minor?.code == .abiTooNew)
        #expect(minor?.message.contains("ABI 1.99") == true)
    }

    @Test("A half-implemented capability and a table without execute are refused at load")
    func incompleteTables() throws {
        let half = loadError { _ = try loader().load(try! Compiler.fixture("half_capability")) }
        #expect(half?.code == .halfImplementedCapability)
        #expect(half?.message.contains("taskhost.cancel/1") == true)
        let noExecute = loadError { _ = try loader().load(try! Compiler.fixture("missing_execute")) }
        #expect(noExecute?.code == .invalidTable)
        #expect(noExecute?.message.contains("th_plugin.execute") == true)
    }

    @Test("A config_schema that is not a JSON object is refused, naming the field")
    func invalidSchema() throws {
        let folder = Paths.scratch()
        let source = try String(
            contentsOfFile: Paths.packageRoot + "/Tests/TaskHostRuntimeTests/Fixtures/ok_sync.c", encoding: .utf8)
        let broken = source.replacingOccurrences(
            of: #".config_schema = "{\"type\":\"object\",\"additionalProperties\":false}","#,
            with: #".config_schema = "{not json","#)
        #expect(broken != source)
        try broken.write(toFile: folder + "/bad_schema.c", atomically: true, encoding: .utf8)
        let error = loadError { _ = try loader().load(try Compiler.sharedLibrary(folder + "/bad_schema.c")) }
        #expect(error?.code == .invalidTable)
        #expect(error?.message.contains("th_plugin.config_schema is not a JSON object: {not json") == true)
    }

    @Test("A plugin file others can write to is refused unless allowed")
    func insecurePermissions() throws {
        let folder = Paths.scratch()
        let path = folder + "/libshared.so"
        try FileManager.default.copyItem(atPath: try Compiler.fixture("ok_sync"), toPath: path)
        chmod(path, 0o666)
        let error = loadError { _ = try loader().load(path) }
        #expect(error?.code == .insecurePermissions)
        #expect(error?.message.contains("anyone") == true)
        #expect(error?.remedy.contains("chmod go-w") == true)
        #expect(try loader(allowInsecure: true).load(path).name == "fixture-ok")
    }

    @Test("A plugin reached through a link, or below a folder others can write to, is refused too")
    func insecureFolders() throws {
        let folder = Paths.scratch()
        let open = folder + "/open"
        let safe = folder + "/open/inner"
        let elsewhere = folder + "/safe"
        for made in [safe, elsewhere] {
            try FileManager.default.createDirectory(atPath: made, withIntermediateDirectories: true)
        }
        chmod(folder, 0o755)
        chmod(safe, 0o755)
        chmod(elsewhere, 0o755)
        let plugin = safe + "/libok.so"
        try FileManager.default.copyItem(atPath: try Compiler.fixture("ok_sync"), toPath: plugin)
        chmod(plugin, 0o755)
        // A folder above the plugin's own that anyone can write to (and not sticky): refused.
        chmod(open, 0o777)
        let above = loadError { _ = try loader().load(plugin) }
        #expect(above?.code == .insecurePermissions)
        #expect(above?.message.contains("its folder \(open)") == true, "\(String(describing: above))")
        // A safe-looking link to it: refused for the same folder.
        let link = elsewhere + "/libok.so"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: plugin)
        let linked = loadError { _ = try loader().load(link) }
        #expect(linked?.message.contains("its folder \(open)") == true, "\(String(describing: linked))")
        // Sticky, like /tmp: others cannot replace what is below it.
        chmod(open, 0o1777)
        #expect(try loader().load(link).name == "fixture-ok")
        #expect(try loader().load(plugin).name == "fixture-ok")
    }

    @Test("create's refusal carries the plugin's own message")
    func createFails() throws {
        let plugin = try loader().load(try Compiler.fixture("create_fails"))
        do {
            _ = try plugin.makeInstance(configuration: "{}", logger: LogRecorder().logger)
            Issue.record("create succeeded")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect(error.message.contains("missing key 'endpoint': set it to the service URL"))
        }
    }

    @Test("validate and create reject a bad configuration with the plugin's message")
    func configurationValidation() throws {
        let plugin = try loader().load(try Compiler.fixture("ok_sync"))
        #expect(plugin.validate(configuration: "{}") == nil)
        #expect(plugin.validate(configuration: #"{"bad": true}"#) == "key 'bad' is not allowed")
        let echo = try loader().load("Echo")
        #expect(echo.validate(configuration: #"{"delayMs": "soon"}"#)?.contains("key 'delayMs'") == true)
    }

    @Test("The documented C plugin (TargetFile) builds with cc alone and passes the conformance check")
    func documentedExample() async throws {
        let path = try Compiler.sharedLibrary(
            Paths.packageRoot + "/Plugins/TargetFile/target_file.c", name: "doc_example")
        let config = #"{"directory": "\#(Paths.scratch())/out"}"#
        let report = await PluginConformance.check(path, loader: loader(), configuration: config, tasks: 32)
        #expect(report.passed, "\(report.text)")
        // The documentation shows this very file.
        let document = try String(contentsOfFile: Paths.packageRoot + "/docs/plugins.md", encoding: .utf8)
        let source = try String(
            contentsOfFile: Paths.packageRoot + "/Plugins/TargetFile/target_file.c", encoding: .utf8)
        #expect(document.contains(source.trimmingCharacters(in: .whitespacesAndNewlines)))
    }
}
