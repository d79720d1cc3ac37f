import ArgumentParser
import Dispatch
import Foundation
import Logging
import Metrics
import Prometheus
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostRuntime
import TaskHostStore

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a pipeline until its finite sources are exhausted (or until SIGINT/SIGTERM).",
        discussion: """
            The first SIGINT or SIGTERM stops intake and gives running tasks the grace period \
            (shutdown.gracePeriodMs, 10 s by default); a second one stops at once. Exit codes: 0 every \
            task succeeded (or stays in the durable queue); 1 some tasks were dead-lettered, parked, rejected \
            (an HTTP source's rejections are answered, not counted here) or cut off by shutdown; 2 the configuration is wrong, the queue cannot be opened, or a source or \
            endpoint cannot run (a port in use); 3 the queue \
            failed during the run (a full disk).
            """)

    @Argument(help: "The pipeline's configuration (YAML or JSON).")
    var config: String

    @Flag(help: "No progress line on standard error.")
    var quiet = false

    @OptionGroup var options: PluginOptions
    @OptionGroup var logs: LogOptions

    func run() async throws {
        let logger = Logging.bootstrapped(logs)
        // Signals are handled here, in one place, from the start: a tool's SIGUSR1 may reach a host
        // that is still opening its queue.
        let stop = PipelineStop()
        let signals = Signals(stop: stop, logger: logger)
        let loaded: PipelineConfig
        let pipeline: Pipeline
        do {
            loaded = try ConfigLoader.load(path: config, environment: ProcessInfo.processInfo.environment)
            pipeline = try buildPipeline(configuration: loaded, loader: options.loader(config: loaded), logger: logger)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        signals.forward(commands: pipeline)
        if loaded.metricsListen != nil {
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: pipeline.metricsRegistry))
        }
        let showProgress = !quiet && isatty(2) != 0 && !Logging.json.load(ordering: .relaxed)
        let progress: (@Sendable (Pipeline.Progress) -> Void)? = showProgress ? printProgress : nil
        let summary = await pipeline.run(stop: stop, progress: progress)
        withExtendedLifetime(signals) {}
        if showProgress { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        printSummary(summary, durable: loaded.queue != nil)
        if let error = summary.sourceError { printError(error) }
        if let error = summary.queueError { printError(error) }
        if summary.exitCode != 0 { throw ExitCode(summary.exitCode) }
    }
}

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a pipeline's configuration without running anything; exit 0 when valid, 2 when not.")

    @Argument(help: "The pipeline's configuration (YAML or JSON).")
    var config: String

    @OptionGroup var options: PluginOptions

    func run() async throws {
        do {
            let loaded = try ConfigLoader.load(path: config, environment: ProcessInfo.processInfo.environment)
            try Pipeline.check(loaded, loader: options.loader(config: loaded))
            // An existing queue file is opened and checked too (a new one is made by `run`).
            if let settings = loaded.queue, FileManager.default.fileExists(atPath: settings.path) {
                _ = try QueueAdmin(config: loaded)
            }
            print(
                "\(config): valid (\(loaded.executors.count) executor\(loaded.executors.count == 1 ? "" : "s"), "
                    + "\(loaded.sources.count) source\(loaded.sources.count == 1 ? "" : "s"))")
            // Each cron schedule's next three fire times, as `systemd-analyze calendar` shows them.
            let now = Date()
            for source in loaded.sources {
                guard case .interval(.cron(let cron), _, _) = source.input else { continue }
                let times = cron.upcoming(3, after: now).map(cron.rfc3339)
                print("sources.\(source.name): next \(times.joined(separator: ", "))")
            }
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
    }
}

/// SIGINT/SIGTERM: the first drains, the second stops at once.
///
/// The handlers run on a queue of their own, not on the threads that run tasks: an executor that
/// holds every one of those threads (a plugin that blocks or ignores cancellation) cannot keep the
/// signals from being seen. If the run has not ended ``forceExitAfter`` after the second signal,
/// or at a third, the process exits with 128 + the signal's number; a durable queue keeps the
/// tasks that were running, queued with their attempt.
final class Signals: @unchecked Sendable {
    static let forceExitAfter = 3
    let sources: [any DispatchSourceSignal]
    let commands: any DispatchSourceSignal
    /// The pipeline SIGUSR1 goes to, once built.
    final class Target: Sendable { let pipeline = Mutex<Pipeline?>(nil) }
    let target = Target()
    /// How many signals arrived.
    final class Count: Sendable { let value = Atomic<Int>(0) }

    init(stop: PipelineStop, logger: Logger) {
        let queue = DispatchQueue(label: "taskhost.signals")
        let watchdog = DispatchQueue(label: "taskhost.signals.watchdog")
        // Stopping may wait on locks that a stuck executor's thread holds: never on the
        // handlers' queue, which must see the next signal.
        let stopping = DispatchQueue(label: "taskhost.signals.stop")
        var sources: [any DispatchSourceSignal] = []
        let received = Count()
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler {  // a cycle until deinit cancels the source
                // Signals that arrive together are delivered as one event: count each.
                for _ in 0..<max(1, Int(source.data)) {
                    let count = received.value.add(1, ordering: .relaxed).newValue
                    switch count {
                    case 1:
                        logger.warning(
                            "stopping: intake stopped, running tasks get the grace period (signal again to stop now)")
                    case 2:
                        watchdog.asyncAfter(deadline: .now() + .seconds(Self.forceExitAfter)) {
                            Self.forceExit(
                                number,
                                "the run did not end within \(Self.forceExitAfter) s of the second signal: an "
                                    + "executor holds the host's threads (a plugin that blocks, or ignores "
                                    + "cancellation)")
                        }
                        logger.warning("stopping now")
                    default:
                        Self.forceExit(number, "a third signal")
                    }
                    stopping.async { stop.request() }
                }
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
        // SIGUSR1: `taskhost targets` and `taskhost enqueue` tell a running host to read its
        // queue. Ignored until the pipeline is built (and with `queue: memory`).
        signal(SIGUSR1, SIG_IGN)
        commands = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: queue)
        let target = self.target
        commands.setEventHandler { target.pipeline.withLock { $0 }?.commandsArrived() }
        commands.resume()
    }

    /// From now on SIGUSR1 reaches `pipeline`.
    func forward(commands pipeline: Pipeline) {
        target.pipeline.withLock { $0 = pipeline }
    }

    deinit {
        for source in sources { source.cancel() }
        commands.cancel()
    }

    /// Writes why to standard error and exits at once, without running anything else.
    static func forceExit(_ signal: Int32, _ reason: String) -> Never {
        let line =
            "taskhost: exiting now (\(reason)); with the durable queue, running tasks stay queued and run "
            + "again next time (their attempts counted as crashes)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        _exit(128 + signal)
    }
}

extension PluginOptions {
    /// The loader, with the configuration's pluginPath after the command line's.
    func loader(config: PipelineConfig) -> PluginLoader {
        var environment: [String: String] = [:]
        if let value = ProcessInfo.processInfo.environment["TASKHOST_PLUGIN_PATH"] {
            environment["TASKHOST_PLUGIN_PATH"] = value
        }
        return PluginLoader(
            searchPath: PluginLoader.searchPath(extra: pluginPath + config.pluginPath, environment: environment),
            allowInsecure: allowInsecurePlugins)
    }
}

/// The progress line: done (of the total when known), rate, and the time left.
@Sendable func printProgress(_ progress: Pipeline.Progress) {
    let rate = progress.seconds > 0 ? Double(progress.done) / progress.seconds : 0
    var line = "\r\u{1B}[K\(progress.done)"
    if let total = progress.total {
        line += "/\(total) done, \(Int(rate)) tasks/s"
        if rate > 0, total > progress.done {
            line += ", ETA \(Int((Double(total - progress.done) / rate).rounded(.up))) s"
        }
    } else {
        line += " done, \(Int(rate)) tasks/s"
    }
    FileHandle.standardError.write(Data(line.utf8))
}

/// The closing line of `run`: text, or a log line with its counts as numbers when logs are JSON.
func printSummary(_ summary: Pipeline.Summary, durable: Bool) {
    if Logging.json.load(ordering: .relaxed) {
        var fields: Logger.Metadata = [
            "tasks": .stringConvertible(summary.admitted), "seconds": .stringConvertible(summary.seconds),
            "succeeded": .stringConvertible(summary.succeeded),
            "deadLettered": .stringConvertible(summary.deadLettered), "parked": .stringConvertible(summary.parked),
            "cancelled": .stringConvertible(summary.cancelled), "rejected": .stringConvertible(summary.rejected),
            "retries": .stringConvertible(summary.retries), "exitCode": .stringConvertible(summary.exitCode),
        ]
        if durable { fields["leftQueued"] = .stringConvertible(summary.leftQueued) }
        JSONLogHandler.write(level: .info, label: "taskhost", message: "run finished", metadata: fields)
        return
    }
    let line =
        "taskhost: \(summary.admitted) tasks in \(String(format: "%.2f", summary.seconds)) s: \(summary.succeeded) succeeded, "
        + "\(summary.deadLettered) dead-lettered, \(summary.parked) parked, \(summary.cancelled) cancelled, "
        + "\(summary.rejected) inputs rejected, \(summary.retries) retries"
        + (durable ? ", \(summary.leftQueued) left in the queue\n" : "\n")
    FileHandle.standardError.write(Data(line.utf8))
}
