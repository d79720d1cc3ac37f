import Foundation
import Logging
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostStore
import Testing

@testable import TaskHostRuntime

/// Where things are: the package root (from this file), the built plugins (beside the test
/// bundle, or TASKHOST_TEST_PLUGIN_DIR), and fixtures compiled with `cc` once per test process.
enum Paths {
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static let header = packageRoot + "/Sources/CTaskHostPlugin/include"

    static let builtPlugins: String = {
        if let override = ProcessInfo.processInfo.environment["TASKHOST_TEST_PLUGIN_DIR"] { return override }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var folder = executable.deletingLastPathComponent()
        // The test bundle may sit in NAME.xctest/ inside the build folder.
        while !FileManager.default.fileExists(atPath: folder.appendingPathComponent("libEcho.so").path),
            folder.path != "/"
        {
            folder.deleteLastPathComponent()
        }
        return folder.path
    }()

    static func plugin(_ name: String) -> String { builtPlugins + "/lib\(name).so" }

    /// A fresh folder for one test.
    static func scratch() -> String {
        let folder = NSTemporaryDirectory() + "taskhost-tests-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder
    }
}

/// Compiles C files with `cc -shared -fPIC` against the plugin header alone.
enum Compiler {
    static let output = Paths.scratch()
    private static let built = Mutex<[String: String]>([:])

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Compiles `source` (a path) into a shared library; cached per process.
    static func sharedLibrary(_ source: String, name: String? = nil) throws -> String {
        let base = name ?? URL(fileURLWithPath: source).deletingPathExtension().lastPathComponent
        if let path = built.withLock({ $0[source] }) { return path }
        let target = output + "/lib\(base).so"
        // Built aside and renamed into place: a test running at the same time that compiles the
        // same file never loads a half-written library.
        let partial = target + ".partial-" + UUID().uuidString
        let result = try run(
            "/usr/bin/env",
            [
                "cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I", Paths.header, "-o", partial,
                source, "-lpthread",
            ])
        guard result.status == 0 else { throw Failure(description: "cc failed for \(source):\n\(result.output)") }
        guard rename(partial, target) == 0 else { throw Failure(description: "cannot rename \(partial) to \(target)") }
        built.withLock { $0[source] = target }
        return target
    }

    static func fixture(_ name: String) throws -> String {
        try sharedLibrary(Paths.packageRoot + "/Tests/TaskHostRuntimeTests/Fixtures/\(name).c")
    }

    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// A loader that finds the built plugins and refuses nothing but what a test asks for.
func loader(allowInsecure: Bool = false) -> PluginLoader {
    PluginLoader(searchPath: [Paths.builtPlugins], allowInsecure: allowInsecure)
}

/// Collects log lines, to assert on misbehaviour reports.
final class LogRecorder: LogHandler, @unchecked Sendable {
    let lines = Mutex<[String]>([])
    // Shared by every copy of the logger (a reference handler): libraries that set metadata on
    // their copies (postgres-nio, per connection) do so from several threads.
    let sharedMetadata = Mutex<Logger.Metadata>([:])
    var metadata: Logger.Metadata {
        get { sharedMetadata.withLock { $0 } }
        set { sharedMetadata.withLock { $0 = newValue } }
    }
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { sharedMetadata.withLock { $0[key] } }
        set { sharedMetadata.withLock { $0[key] = newValue } }
    }
    func log(event: LogEvent) {
        lines.withLock { $0.append("\(event.level): \(event.message)") }
    }
    var logger: Logger { Logger(label: "test") { _ in self } }
    var all: [String] { lines.withLock { $0 } }
}

/// Records every plugin outcome by task payload.
final class OutcomeRecorder: Sendable {
    let outcomes = Mutex<[(payload: String, attempt: Int, outcome: PluginOutcome)]>([])
    var callback: @Sendable (TaskItem<String>, ExecutionContext, PluginOutcome) -> Void {
        { task, context, outcome in self.outcomes.withLock { $0.append((task.payload, context.attempt, outcome)) } }
    }
    var all: [(payload: String, attempt: Int, outcome: PluginOutcome)] { outcomes.withLock { $0 } }
}

/// The PluginError `body` throws, or nil.
func loadError(_ body: () throws -> Void) -> PluginError? {
    do {
        try body()
        return nil
    } catch {
        return error as? PluginError
    }
}

/// What an in-process run did: the summary `taskhost run` prints (and takes its exit code from),
/// and the host's log lines (info and above), for the messages of failed expectations.
struct InProcessRun: CustomStringConvertible {
    var summary: Pipeline.Summary
    var log: [String]

    var exitCode: Int32 { summary.exitCode }
    var description: String { "\(summary)\n" + log.joined(separator: "\n") }
}

/// Runs the pipeline `yaml` describes inside the test process, as `taskhost run` does: the
/// configuration is written to `folder/file`, loaded (with `environment` for its `${NAME}`s, not
/// the process's) and built with a loader that finds the built plugins, then run until its
/// sources end. Nothing process-wide is touched (no working directory, no signal handler), so
/// paths in `yaml` must be absolute: relative ones are the test runner's working directory's.
///
/// `whileRunning` runs beside the pipeline with its stop (what SIGINT/SIGTERM do in the
/// executable); a pipeline with no end (a spool folder, an http source) must be stopped by it.
/// When it throws, the run is stopped at once and the error is rethrown.
///
/// With a durable queue, the run is over only once its queue's host lock is released (the
/// pipeline gone): an operator tool started next sees no host, as after the process's exit.
@discardableResult
func runInProcess(
    _ yaml: String, in folder: String, file: String = "pipeline.yaml", environment: [String: String] = [:],
    whileRunning: (@Sendable (_ stop: PipelineStop) async throws -> Void)? = nil
) async throws -> InProcessRun {
    let path = folder + "/" + file
    try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    let config = try ConfigLoader.load(path: path, environment: environment)
    let log = LogRecorder()
    log.logLevel = .info
    let summary = try await runBuilt(config, logger: log.logger, whileRunning: whileRunning)
    if let settings = config.queue {
        // The lock goes with the queue's last reference, which a commit thread may hold a moment
        // after the run returned.
        var holder = try DurableQueue(settings: settings, host: false).hostPID()
        var tries = 0
        while holder != nil, tries < 1000 {
            try await Task.sleep(for: .milliseconds(5))
            holder = try DurableQueue(settings: settings, host: false).hostPID()
            tries += 1
        }
        #expect(holder == nil, "the queue's host lock outlived the run in-process (held by pid \(holder ?? 0))")
    }
    return InProcessRun(summary: summary, log: log.all)
}

/// Builds and runs `config`; the pipeline (with its queue and the queue's lock) is released when
/// this returns.
private func runBuilt(
    _ config: PipelineConfig, logger: Logger,
    whileRunning: (@Sendable (PipelineStop) async throws -> Void)?
) async throws -> Pipeline.Summary {
    // The plugin search path of `taskhost run --plugin-path <built plugins>`, without the
    // process's TASKHOST_PLUGIN_PATH.
    let loader = PluginLoader(
        searchPath: PluginLoader.searchPath(extra: [Paths.builtPlugins] + config.pluginPath, environment: [:]),
        allowInsecure: false)
    let pipeline = try buildPipeline(configuration: config, loader: loader, logger: logger)
    let stop = PipelineStop()
    guard let whileRunning else { return await pipeline.run(stop: stop) }
    return try await withThrowingTaskGroup(of: Pipeline.Summary?.self) { group in
        group.addTask { await pipeline.run(stop: stop) }
        group.addTask {
            do {
                try await whileRunning(stop)
            } catch {
                stop.requestNow()
                throw error
            }
            return nil
        }
        var summary: Pipeline.Summary?
        while let next = try await group.next() {
            if let next { summary = next }
        }
        return summary!
    }
}
