import AsyncAlgorithms
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostPostgres
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

#if canImport(Glibc)
    import Glibc
#endif

/// Builds what `taskhost run` runs: the pipeline a configuration describes, its plugins loaded,
/// executors made, sinks and durable queue opened. Run it with ``Pipeline/run(stop:progress:)``;
/// stop it with the ``PipelineStop`` given there.
///
/// - Throws: ``ConfigError`` naming the file, line and key at fault, and what to do.
/// - Important: The library installs no signal handler and bootstraps no logging or metrics
///   system: the caller does (route SIGINT/SIGTERM to ``PipelineStop/request()`` and SIGUSR1 to
///   ``Pipeline/commandsArrived()``).
package func buildPipeline(configuration: PipelineConfig, loader: PluginLoader, logger: Logger) throws(ConfigError)
    -> Pipeline
{
    try Pipeline(config: configuration, loader: loader, logger: logger)
}

/// A configured pipeline: its executors made, its sinks opened, ready to run.
package final class Pipeline: Sendable {
    package let config: PipelineConfig
    let executors: [any AnsweringExecutor]
    let instances: [PluginInstance]
    let router: PipelineExecutor
    let logger: Logger
    let results: JSONLinesSink?
    let deadLetters: JSONLinesSink?
    let counters: Counters
    let metrics: PipelineMetrics
    /// The durable queue (nil for `queue: memory`), opened and checked by `init`.
    let queue: DurableQueue?
    /// The shared queue on PostgreSQL (`queue: { postgres: … }`, preview); its pool runs with a run.
    let postgres: PostgresQueue?
    /// Forwarded by the executable: see ``commandsArrived()``.
    let commandWakeups = CommandWakeups()
    /// Whether the pipeline takes input (`/readyz`): each source's status, the queue's room.
    let health: PipelineHealth

    /// What a run did, for the summary and the exit code.
    package struct Summary: Sendable {
        package var admitted = 0
        package var succeeded = 0
        package var deadLettered = 0
        package var rejected = 0
        /// Of ``rejected``, inputs answered to their sender with the reason (an HTTP source's 400):
        /// reported, and no reason for exit code 1, since the sender was told.
        package var rejectedAnswered = 0
        package var parked = 0
        package var cancelled = 0
        package var retries = 0
        /// Durable queue: tasks left queued for the next run (shutdown, parked targets).
        package var leftQueued = 0
        package var perSource: [String: Int] = [:]
        package var seconds = 0.0
        /// The durable queue failed (a full disk, an unwritable file): the run stopped.
        package var queueError: String?
        /// A source or endpoint could not run (its port taken, its folder gone): the run stopped.
        package var sourceError: String?

        /// 0: every task succeeded (or stays queued in the durable queue); 1: some were
        /// dead-lettered, parked, rejected or cancelled; 2: a source or endpoint could not run;
        /// 3: the durable queue failed.
        package var exitCode: Int32 {
            if queueError != nil { return 3 }
            if sourceError != nil { return 2 }
            return deadLettered + (rejected - rejectedAnswered) + parked + cancelled == 0 ? 0 : 1
        }
    }

    final class Counters: Sendable {
        final class Count: Sendable {
            let value = Atomic<Int>(0)
        }
        let rejected = Atomic<Int>(0)
        let rejectedAnswered = Atomic<Int>(0)
        let finished = Atomic<Int>(0)
        /// Inputs read per source, live.
        let sources: [String: Count]

        init(sources: [String]) {
            self.sources = Dictionary(uniqueKeysWithValues: sources.map { ($0, Count()) })
        }

        var perSource: [String: Int] { sources.mapValues { $0.value.load(ordering: .relaxed) } }
    }

    /// Makes every executor (loading plugins, preparing functions) and opens the sinks. Every
    /// failure names the configuration's file, line and key.
    package init(config: PipelineConfig, loader: PluginLoader, logger: Logger) throws(ConfigError) {
        self.config = config
        self.logger = logger
        metrics = PipelineMetrics(
            durable: config.queue != nil || config.postgres != nil, executors: config.executors.map(\.name),
            sources: config.sources.map(\.name))
        counters = Counters(sources: config.sources.map(\.name))
        health = PipelineHealth(sources: config.sources.map(\.name), metrics: metrics)
        var executors: [any AnsweringExecutor] = []
        var instances: [PluginInstance] = []
        for executor in config.executors {
            switch try Self.prepare(executor, in: config, loader: loader) {
            case .plugin(let plugin, let configuration):
                let instance: PluginInstance
                do {
                    let metrics = self.metrics
                    let (name, pluginName) = (executor.name, plugin.name)
                    instance = try plugin.makeInstance(
                        configuration: configuration, logger: logger,
                        onMisbehaviour: { metrics.misbehaviour($0, executor: name, plugin: pluginName) })
                } catch {
                    throw Self.fail(executor, in: config, error.message, nil)
                }
                instances.append(instance)
                executors.append(PluginExecutor(instance: instance, attemptTimeout: config.timeout))
            case .function(let function):
                executors.append(function)
            }
        }
        self.executors = executors
        self.instances = instances
        self.router = PipelineExecutor(executors: executors)
        results = try config.results.map { path throws(ConfigError) in try JSONLinesSink(path: path) }
        deadLetters = try config.deadLetter.map { path throws(ConfigError) in try JSONLinesSink(path: path) }
        if let settings = config.queue {
            do {
                queue = try DurableQueue(settings: settings, host: true)
            } catch {
                throw ConfigError(error, config: config)
            }
        } else {
            queue = nil
        }
        if let settings = config.postgres {
            do {
                postgres = try PostgresQueue(
                    url: settings.url, schema: settings.schema, lease: settings.lease, logger: logger)
            } catch {
                throw ConfigError(
                    file: config.file, line: config.queueLocation?.line, column: config.queueLocation?.column,
                    key: "queue.postgres.url", message: error.message, hint: error.remedy)
            }
        } else {
            postgres = nil
        }
    }

    /// An executor checked and ready to make: a plugin loaded with its configuration validated,
    /// or a function resolved with its call interface prepared.
    enum Prepared {
        case plugin(LoadedPlugin, configuration: String)
        case function(FFIFunctionExecutor)
    }

    /// Loads, validates and resolves one executor; every failure names the configuration's key.
    static func prepare(_ executor: ExecutorConfig, in config: PipelineConfig, loader: PluginLoader)
        throws(ConfigError) -> Prepared
    {
        switch executor.kind {
        case .plugin(let reference, let configuration):
            let plugin: LoadedPlugin
            do {
                plugin = try loader.load(reference)
            } catch {
                throw fail(
                    executor, in: config,
                    error.path.isEmpty || error.message.contains(error.path)
                        ? error.message : error.message + " (\(error.path))",
                    error.remedy,
                    at: executor.referenceLocation)
            }
            if let message = plugin.validate(configuration: configuration) {
                throw fail(
                    executor, in: config, "the plugin \(plugin.name) refused its configuration: \(message)",
                    plugin.configSchema.map { "its schema: \($0)" })
            }
            return .plugin(plugin, configuration: configuration)
        case .function(let library, let symbol, let signature, let arguments):
            let resolved = Result { () throws(PluginError) in try loader.resolveLibrary(library) }
            let path = (try? resolved.get()).flatMap { $0 } ?? library
            do throws(PluginError) {
                _ = try resolved.get()
                // A library file is code loaded into the host, as a plugin is; a bare name is
                // left to the system's library folders.
                if path.contains("/") { try loader.checkPermissions(path) }
                return .function(
                    try FFIFunctionExecutor(
                        library: path, symbol: symbol, signature: signature, arguments: arguments))
            } catch {
                // Pointed at the key at fault: the signature, an argument, the function or the library.
                let part: String? =
                    switch error.code {
                    case .invalidSignature: nil
                    case .invalidArgument: "arguments"
                    case .missingFunction: "function"
                    default: "library"
                    }
                // A library found neither in the search path nor by the system: say where we looked.
                if part == "library", case .success(nil) = resolved, error.code == .notFound,
                    error.message.hasPrefix(library + ":")
                {
                    let notFound = loader.libraryNotFound(library, dlerror: error.message)
                    throw fail(
                        executor, in: config, notFound.message, notFound.remedy, at: executor.partLocations["library"])
                }
                throw fail(
                    executor, in: config, error.message, error.remedy,
                    at: part.flatMap { executor.partLocations[$0] })
            }
        }
    }

    static func fail(
        _ executor: ExecutorConfig, in config: PipelineConfig, _ message: String, _ hint: String?,
        at place: PipelineConfig.Location? = nil
    ) -> ConfigError {
        let location = place ?? executor.location
        return ConfigError(
            file: config.file, line: location.line, column: location.column, key: location.key, message: message,
            hint: hint)
    }

    /// The registry that `/metrics` serves. The executable routes swift-metrics into it (the
    /// library bootstraps no metrics system).
    package var metricsRegistry: PrometheusCollectorRegistry { metrics.registry }

    /// Tells a running pipeline that operator commands or tasks enqueued by another process wait
    /// in its durable queue (`taskhost targets` and `taskhost enqueue` send the host SIGUSR1; the
    /// executable forwards it here). Any thread; nothing for `queue: memory`.
    package func commandsArrived() {
        commandWakeups.continuation.yield()
    }

    /// Checks a configuration without running anything: every plugin loads and validates its
    /// configuration, every function resolves with its signature, every sink can be opened.
    package static func check(_ config: PipelineConfig, loader: PluginLoader) throws(ConfigError) {
        for executor in config.executors {
            let prepared = try prepare(executor, in: config, loader: loader)
            // A plugin without validate has create as its only check (taskhost_plugin.h): make an
            // instance and destroy it at once, as `run` would make one.
            if case .plugin(let plugin, let configuration) = prepared, !plugin.hasValidate {
                do {
                    try plugin.makeInstance(configuration: configuration, logger: Logger(label: "taskhost.check"))
                        .destroy()
                } catch {
                    throw Self.fail(executor, in: config, error.message, error.remedy)
                }
            }
        }
        for source in config.sources {
            guard case .file(let path, follow: false) = source.input else { continue }
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw ConfigError(
                    file: config.file, line: source.location.line, column: source.location.column,
                    key: "\(source.location.key).path", message: "cannot read '\(path)'",
                    hint: "a relative path is relative to the configuration's folder")
            }
        }
    }

    /// Runs until the finite sources are exhausted and every task is final, or until `stop`
    /// asks for a shutdown (first call: drain with the grace period; second: at once).
    /// What the progress line shows: tasks finished, the total when every source is a file
    /// read once (its lines, counted up front), and the seconds so far.
    package struct Progress: Sendable {
        package var done: Int
        package var total: Int?
        package var seconds: Double
    }

    /// The number of lines of the finite file sources, or nil when a source has no known end.
    func knownTotal() -> Int? {
        var total = 0
        for source in config.sources {
            guard case .file(let path, follow: false) = source.input, let handle = FileHandle(forReadingAtPath: path)
            else { return nil }
            defer { try? handle.close() }
            var endsWithNewline = true
            while let chunk = try? handle.read(upToCount: 1 << 20), !chunk.isEmpty {
                total += chunk.reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
                endsWithNewline = chunk.last == 10
            }
            if !endsWithNewline { total += 1 }  // a last line without its newline
        }
        return total
    }

    package func run(stop: PipelineStop, progress: (@Sendable (Progress) -> Void)? = nil) async -> Summary {
        // The references the run's parts hold to each other are let go when it returns: the stop's
        // actions hold the store, whose failure handler holds the stop. Kept, they would keep the
        // queue open, and its host lock taken, for the life of the process.
        defer { stop.detach() }
        if let postgres {
            let store = PostgresRun(
                queue: postgres, executors: config.executors.map(\.name), maxConcurrency: config.maxConcurrency,
                maxAttempts: config.retry.maxAttempts, park: config.onExhausted == .park, logger: logger,
                onFailure: { _ in stop.requestNow() })
            return await run(store: store, stop: stop, progress: progress)
        }
        guard let queue else { return await run(store: MemoryStore(), stop: stop, progress: progress) }
        let store = DurableRun(
            queue: queue, executors: config.executors.map(\.name),
            window: DurableRun.window(bufferSize: config.bufferSize), logger: logger,
            onFailure: { _ in stop.requestNow() })
        return await run(store: store, stop: stop, progress: progress)
    }

    /// The one execution path, whatever the store: sources append to it, the scheduler reads its
    /// feed and decides every policy, the store records what its hooks are told.
    func run<Store: PipelineStore>(store: Store, stop: PipelineStop, progress: (@Sendable (Progress) -> Void)?) async
        -> Summary
    {
        let started = ContinuousClock.now
        let metrics = self.metrics
        let stoppers = Mutex<[StopSignal]>([])
        do {
            try await store.open(for: self)
        } catch {
            var out = Summary()
            out.queueError = error.description
            return out
        }
        var configuration = SchedulerConfiguration(
            maxConcurrency: config.maxConcurrency, bufferSize: config.bufferSize, retry: config.retry,
            timeout: config.timeout, onExhausted: config.onExhausted)
        // Pool 0 is unused; executor i's tasks run in pool i + 1, under its own cap.
        configuration.poolLimits = [nil] + config.executors.map(\.maxConcurrency)
        let scheduler = Scheduler(
            executor: RunExecutor(router: router, store: store), configuration: configuration,
            hooks: store.hooks(for: self))
        await store.ready(for: self, scheduler: scheduler)

        // A source or endpoint that cannot run stops the run at once (exit code 2), saying why.
        let sourceFailure = Mutex<String?>(nil)
        let failed: @Sendable (SourceError) -> Void = { [logger] error in
            let first = sourceFailure.withLock { failure -> Bool in
                defer { if failure == nil { failure = error.description } }
                return failure == nil
            }
            logger.error("\(error.description); stopping")
            if first { stop.requestNow() }
        }

        // The parts of the run, in the order they start; they stop in the reverse order.
        let outcome = Mutex<RunSummary<PipelineTask>?>(nil)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        func add(
            _ name: String, ends: ServiceGroupConfiguration.ServiceConfiguration.TerminationBehavior = .cancelGroup,
            _ body: @escaping @Sendable () async -> Void
        ) {
            services.append(.init(service: PipelineService(name, body), successTerminationBehavior: ends))
        }
        let results = self.results
        let deadLetters = self.deadLetters
        // The sinks: lines reach their files within a bounded delay, and all of them at the end.
        add("sinks") {
            await untilShutdown {
                while (try? await Task.sleep(for: .milliseconds(200))) != nil {
                    results?.flush()
                    deadLetters?.flush()
                }
            }
            results?.flush()
            deadLetters?.flush()
        }
        // The plugin instances, destroyed once nothing runs any more.
        add("executors") { [instances] in
            await waitForShutdown()
            for instance in instances { instance.destroy() }
        }
        if let listen = config.metricsListen {
            let counters = self.counters
            let logger = self.logger
            // An endpoint that cannot serve (its port taken) stops the run, as a source that cannot.
            let depth: (@Sendable () async -> QueueDepth?)? =
                store.isDurable ? { @Sendable in await store.depth() } : nil
            let readiness = Readiness(
                health: health, queueFailure: { store.failureMessage }, durable: store.isDurable,
                executors: (executors.count, config.executors.count))
            add("operations endpoint", ends: .ignore) {
                let router = operationsRouter(
                    metrics: metrics, snapshot: { scheduler.snapshot() }, perSource: { counters.perSource },
                    durableQueued: depth, readiness: readiness)
                do throws(SourceError) {
                    try await serve(router, on: listen, logger: logger)
                } catch {
                    failed(error)
                }
            }
        }
        for (name, body) in store.services(for: self, scheduler: scheduler) { add(name, body) }
        // The scheduler: its input's end (and every task final) ends the run; a graceful stop
        // stops the feed and gives running tasks the grace period.
        add("scheduler", ends: .gracefullyShutdownGroup) { [config] in
            let summary = await withGracefulShutdownHandler {
                await scheduler.run(store.feed(for: self))
            } onGracefulShutdown: {
                store.stop()
                scheduler.shutdown(gracePeriod: config.gracePeriod)
            }
            outcome.withLock { $0 = summary }
        }
        if let progress {
            add("progress") {
                let total = store.isDurable ? nil : self.knownTotal()
                await untilShutdown {
                    while (try? await Task.sleep(for: .milliseconds(500))) != nil {
                        let done =
                            self.counters.finished.load(ordering: .relaxed)
                            + self.counters.rejected.load(ordering: .relaxed)
                        progress(Progress(done: done, total: total, seconds: (ContinuousClock.now - started).seconds))
                    }
                }
            }
        }
        // The sources, last: the first to stop. Each ends by itself when its input does; the last
        // one to end tells the store.
        let sourcesLeft = Atomic<Int>(config.sources.count)
        for source in config.sources {
            let stopper = StopSignal()
            stoppers.withLock { $0.append(stopper) }
            // One intake per source: its batches (and its checkpoint) reach the store in order.
            let intake = PipelineIntake(
                pipeline: self, source: source, store: store, stopper: stopper,
                isFull: { scheduler.snapshot().intakeWaitingForRoom })
            let reader = makeSource(source)
            let health = self.health
            add("source \(source.name)", ends: .ignore) { [logger] in
                await withGracefulShutdownHandler {
                    do throws(SourceError) {
                        try await reader.run(into: intake, stopper: stopper, logger: logger)
                    } catch {
                        failed(error)
                    }
                } onGracefulShutdown: {
                    stopper.stop()
                }
                health.set(source.name, .finished)
                if sourcesLeft.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { store.sourcesFinished() }
            }
        }
        if config.sources.isEmpty { store.sourcesFinished() }

        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: services, logger: quiet))
        let (requests, requested) = AsyncStream<Bool>.makeStream()
        stop.attach(
            graceful: { requested.yield(false) },
            now: { [stoppers] in
                for stopper in stoppers.withLock({ $0 }) { stopper.stop() }
                store.stop()
                scheduler.shutdown(gracePeriod: .zero)
                requested.yield(true)
            })
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                do {
                    try await group.run()
                } catch {
                    self.logger.error("the run failed: \(error)")
                }
                requested.finish()
            }
            tasks.addTask {
                for await _ in requests { await group.triggerGracefulShutdown() }
            }
        }
        var out = Summary()
        out.sourceError = sourceFailure.withLock { $0 }
        guard let summary = outcome.withLock({ $0 }) else { return out }
        await store.close(summary, pipeline: self, into: &out)
        results?.flush()
        deadLetters?.flush()
        out.admitted = summary.admitted
        out.succeeded = summary.succeeded
        // Plus those a store ended without running them (the PostgreSQL queue's poison guard).
        out.deadLettered += summary.deadLettered
        out.retries = summary.retries
        out.rejected = counters.rejected.load(ordering: .relaxed)
        out.rejectedAnswered = counters.rejectedAnswered.load(ordering: .relaxed)
        out.perSource = counters.perSource
        out.seconds = (ContinuousClock.now - started).seconds
        return out
    }

    // MARK: Sinks

    /// An attempt's end as the scheduler reports it: metrics, and with `queue: memory` the result
    /// line, the dead letter and the batch (the durable queue records those before the target is
    /// released, in ``record(_:run:)``, but for an operator's drain).
    func finished(_ record: AttemptRecord<PipelineTask>, durable: DurableRun?, recordedByStore: Bool = false) {
        let labelled = metrics.of(record.task)
        if record.executionTime > .zero { labelled.execution.record(record.executionTime) }
        // After the queue failed, what the scheduler does with the tasks it holds is not their
        // outcome: they stay queued, their batches stay open.
        if durable?.hasFailed == true { return }
        let recorded = (durable != nil || recordedByStore) && !(record.error is DrainedError)
        switch record.disposition {
        case .succeeded:
            labelled.succeeded.increment()
            guard !recorded else { return }
            writeResult(record.task, status: "succeeded", attempts: record.context.attempt, error: nil)
            record.task.payload.batch?.final(failed: false)
        case .deadLettered:
            labelled.deadLettered.increment()
            guard !recorded else { return }
            let error = record.error.map { "\($0)" } ?? "dead-lettered"
            let attempts = record.context.attempt
            writeResult(record.task, status: "deadLettered", attempts: attempts, error: error)
            // A durable drain wrote the dead letter and the row's state with the command.
            if durable == nil { writeDeadLetter(record.task, error: error, attempts: attempts) }
            record.task.payload.batch?.final(failed: true)
        case .retrying:
            labelled.retries.increment()
        case .parked, .cancelled:
            return
        }
    }

    func writeDeadLetter(_ task: TaskItem<PipelineTask>, error: String, attempts: Int) {
        deadLetters?.write(
            bytes: deadLetterLine(
                id: task.id, target: task.targetId, source: task.payload.source, seq: task.payload.seq,
                input: task.payload.raw, error: error, attempts: attempts))
    }

    /// A task whose id an earlier task holds: not queued; its result line says so, with the state of
    /// the task that holds the id.
    func writeDuplicate(_ task: TaskItem<PipelineTask>, existing: ExistingTask) {
        counters.finished.add(1, ordering: .relaxed)
        task.payload.batch?.final(failed: false)
        guard let results else { return }
        var record = JSONObjectWriter()
        record.add("id", task.id)
        switch task.targetId {
        case .integer(let value): record.add("targetId", value)
        case .string(let value): record.add("targetId", value as String?)
        }
        record.add("source", task.payload.source)
        record.add("seq", task.payload.seq)
        record.add("executor", config.executors[task.payload.executor].name)
        record.add("status", "duplicate")
        record.add("state", existing.state.name)
        results.write(bytes: record.finished)
    }

    func writeResult(_ task: TaskItem<PipelineTask>, status: String, attempts: Int, error: String?) {
        counters.finished.add(1, ordering: .relaxed)
        guard let results else { return }
        let log = task.payload.log.snapshot
        var record = JSONObjectWriter()
        record.add("id", task.id)
        switch task.targetId {
        case .integer(let value): record.add("targetId", value)
        case .string(let value): record.add("targetId", value as String?)
        }
        record.add("source", task.payload.source)
        record.add("seq", task.payload.seq)
        record.add("executor", config.executors[task.payload.executor].name)
        record.add("status", status)
        record.add("attempts", attempts)
        record.add("startedAt", raw: log.startedAt == 0 ? "null" : String(log.startedAt))
        record.add("finishedAt", raw: log.finishedAt == 0 ? "null" : String(log.finishedAt))
        record.add("error", error)
        record.add("output", jsonOrString: status == "succeeded" ? log.output : nil)
        results.write(bytes: record.finished)
    }

}

/// A value passed across a concurrency boundary that its type does not know is safe.
struct UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// The scheduler's view of the batches the sources send: one task at a time.
struct Batches: AsyncSequence, Sendable {
    typealias Element = TaskItem<PipelineTask>
    let channel: AsyncChannel<[TaskItem<PipelineTask>]>

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncChannel<[TaskItem<PipelineTask>]>.AsyncIterator
        var current: [TaskItem<PipelineTask>] = []
        var index = 0

        mutating func next() async -> TaskItem<PipelineTask>? {
            while index == current.count {
                guard let batch = await base.next() else { return nil }
                current = batch
                index = 0
            }
            defer { index += 1 }
            return current[index]
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: channel.makeAsyncIterator()) }
}
