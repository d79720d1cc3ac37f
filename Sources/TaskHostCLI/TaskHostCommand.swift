import ArgumentParser
import Logging
import TaskHostConfig
import TaskHostPlugins
import TaskHostRuntime
import TaskHostStore

#if canImport(Glibc)
    import Glibc
#endif

@main
struct TaskHostCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "taskhost",
        abstract: "Runs executor plugins over streams of tasks, never two tasks of one target at once.",
        discussion: """
            Exit codes: 0 success (every task succeeded, or stays queued in the durable queue); 1 some \
            tasks were dead-lettered, parked, rejected or cut off by shutdown, or a plugin check failed; 2 \
            bad configuration, a plugin that cannot be loaded, or a queue that cannot be opened; 3 the \
            durable queue failed during the run (a full disk): intake stopped, committed tasks are kept.
            """,
        version: BuildInfo.current.text,
        subcommands: [
            RunCommand.self, CheckCommand.self, PluginCommand.self, EnqueueCommand.self, StatusCommand.self,
            TargetsCommand.self, DeadLettersCommand.self, TasksCommand.self,
        ])
}

/// Options shared by the commands that load plugins.
struct PluginOptions: ParsableArguments {
    @Option(name: .customLong("plugin-path"), help: "A folder to search for plugins named without a path (repeatable).")
    var pluginPath: [String] = []

    @Flag(name: .customLong("allow-insecure-plugins"), help: "Load plugin files that group or others can write to.")
    var allowInsecurePlugins = false

    var loader: PluginLoader {
        var environment: [String: String] = [:]
        if let value = getenv("TASKHOST_PLUGIN_PATH") { environment["TASKHOST_PLUGIN_PATH"] = String(cString: value) }
        return PluginLoader(
            searchPath: PluginLoader.searchPath(extra: pluginPath, environment: environment),
            allowInsecure: allowInsecurePlugins)
    }
}

struct PluginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin", abstract: "Inspect and check executor plugins.",
        subcommands: [Inspect.self, Check.self])

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a plugin's name, version, ABI, capabilities and configuration schema.")

        @Argument(help: "A plugin file (.so), or a plugin name on the search path.")
        var plugin: String

        @OptionGroup var options: PluginOptions

        func run() async throws {
            do {
                let loaded = try options.loader.load(plugin)
                print("file:          \(loaded.path)")
                print("name:          \(loaded.name)")
                print("version:       \(loaded.version)")
                if let summary = loaded.summary { print("description:   \(summary)") }
                print("ABI:           \(loaded.abiMajor).\(loaded.abiMinor)")
                print("validate:      \(loaded.hasValidate ? "yes" : "no (create checks the configuration)")")
                print(
                    "capabilities:  "
                        + (loaded.capabilities.isEmpty ? "none" : loaded.capabilities.joined(separator: ", ")))
                print("config schema: \(loaded.configSchema ?? "none published")")
            } catch {
                printError(error.description)
                throw ExitCode(2)
            }
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the conformance checks on a plugin and print a report; exit 1 when one fails.")

        @Argument(help: "A plugin file (.so), or a plugin name on the search path.")
        var plugin: String

        @Option(help: "The plugin's configuration, as JSON.")
        var config = "{}"

        @Option(help: "The payload of the check tasks.")
        var payload = "{}"

        @OptionGroup var options: PluginOptions

        func run() async throws {
            // Each line as its check ends, flushed: a plugin that crashes the process leaves
            // the report up to the check it crashed in.
            print("plugin check: \(plugin)")
            fflush(nil)
            let report = await PluginConformance.check(
                plugin, loader: options.loader, configuration: config, payload: payload
            ) { check in
                print(ConformanceReport.line(check))
                fflush(nil)
            }
            print(report.result)
            if !report.passed {
                throw ExitCode(report.checks.first?.passed == false ? 2 : 1)
            }
        }
    }
}

/// An error for the user: a log line when `run`'s logs are JSON (every line of standard error is
/// JSON then), `taskhost: error: ...` otherwise.
func printError(_ message: String) {
    if Logging.json.load(ordering: .relaxed) {
        return JSONLogHandler.write(level: .error, label: "taskhost", message: message, metadata: [:])
    }
    var line = "taskhost: error: \(message)\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
