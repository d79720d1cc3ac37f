import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Prometheus
import Synchronization
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

/// The counters, gauges and histograms of SEMANTICS.md item 12, in a Prometheus registry.
///
/// The task counters and the duration histograms are labelled by executor and source (a few of
/// each, named in the configuration), never by target: targets are unbounded.
final class PipelineMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    /// Inputs rejected, by source (index as in the configuration).
    let rejected: [Prometheus.Counter]
    /// The source names, in the configuration's order: a task's ``Labelled`` metrics are found
    /// by its source's position (a few names: a scan beats hashing).
    let sourceNames: [String]
    /// Per executor, then per source.
    let labelled: [[Labelled]]
    let running: Prometheus.Gauge
    let queued: Prometheus.Gauge
    let busyTargets: Prometheus.Gauge
    let readyTargets: Prometheus.Gauge
    let backedOffTargets: Prometheus.Gauge
    let parkedTargets: Prometheus.Gauge
    let oldestHeadAge: Prometheus.Gauge
    /// Tasks committed to the durable queue and not started yet (those read into the scheduler
    /// included); absent with `queue: memory`.
    let durableQueued: Prometheus.Gauge?
    /// 1 while the durable queue is full (intake refused or paused), else 0.
    let queueFull: Prometheus.Gauge
    /// The durable queue's tasks by state (`queued`, `parked`, `running`, `succeeded`, `dead`) and
    /// the age of its oldest queued task; absent with `queue: memory`.
    let queueTasks: [String: Prometheus.Gauge]
    let queueOldestAge: Prometheus.Gauge?

    /// The metrics of the tasks of one executor from one source. A class: a task's attempt takes
    /// one reference, not seven.
    final class Labelled: Sendable {
        let succeeded: Prometheus.Counter
        let deadLettered: Prometheus.Counter
        let parked: Prometheus.Counter
        let cancelled: Prometheus.Counter
        let retries: Prometheus.Counter
        let queueWait: DurationHistogram
        let execution: DurationHistogram

        init(
            succeeded: Prometheus.Counter, deadLettered: Prometheus.Counter, parked: Prometheus.Counter,
            cancelled: Prometheus.Counter, retries: Prometheus.Counter, queueWait: DurationHistogram,
            execution: DurationHistogram
        ) {
            self.succeeded = succeeded
            self.deadLettered = deadLettered
            self.parked = parked
            self.cancelled = cancelled
            self.retries = retries
            self.queueWait = queueWait
            self.execution = execution
        }
    }

    static let queueStates = ["queued", "parked", "running", "succeeded", "dead"]

    init(durable: Bool, executors: [String], sources: [String]) {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "taskhost", metricName: metric, unitName: unit, helpText: help)
        }
        let tasks = name("tasks", "total", "Tasks that reached a final state, by executor and source")
        let buckets: [Duration] = [
            .microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100),
            .milliseconds(500), .seconds(1), .seconds(5), .seconds(30),
        ]
        // With the durable queue, `taskhost enqueue` records its tasks as "enqueue:<source>";
        // anything else (tasks of a source since removed from the file) is counted as "other".
        let sources = sources + (durable ? sources.map { "enqueue:" + $0 } : []) + ["other"]
        sourceNames = sources
        rejected = sources.map {
            registry.makeCounter(descriptor: tasks, labels: [("outcome", "rejected"), ("source", $0)])
        }
        labelled = executors.map { executor in
            sources.map { source in
                func outcome(_ outcome: String) -> Prometheus.Counter {
                    registry.makeCounter(
                        descriptor: tasks, labels: [("outcome", outcome), ("executor", executor), ("source", source)])
                }
                let labels = [("executor", executor), ("source", source)]
                return Labelled(
                    succeeded: outcome("succeeded"), deadLettered: outcome("dead_lettered"), parked: outcome("parked"),
                    cancelled: outcome("cancelled"),
                    retries: registry.makeCounter(
                        descriptor: name("retries", "total", "Attempts that failed and were retried"), labels: labels),
                    queueWait: registry.makeDurationHistogram(
                        descriptor: name("queue_wait", "seconds", "Time from ready to start"), labels: labels,
                        buckets: buckets),
                    execution: registry.makeDurationHistogram(
                        descriptor: name("execution", "seconds", "Time in the executor per attempt"), labels: labels,
                        buckets: buckets))
            }
        }
        running = registry.makeGauge(descriptor: name("running", "", "Attempts running now"))
        queued = registry.makeGauge(descriptor: name("queued", "", "Admitted tasks waiting to start"))
        busyTargets = registry.makeGauge(descriptor: name("busy_targets", "", "Targets with a running task"))
        readyTargets = registry.makeGauge(descriptor: name("ready_targets", "", "Targets whose head waits for a slot"))
        backedOffTargets = registry.makeGauge(
            descriptor: name("backoff_targets", "", "Targets whose head waits out a retry delay"))
        parkedTargets = registry.makeGauge(descriptor: name("parked_targets", "", "Targets stopped by the park policy"))
        oldestHeadAge = registry.makeGauge(
            descriptor: name("oldest_head_age", "seconds", "How long the oldest ready head has waited"))
        durableQueued =
            durable
            ? registry.makeGauge(
                descriptor: name("durable_queued", "", "Tasks in the durable queue waiting to start"))
            : nil
        queueFull = registry.makeGauge(
            descriptor: name("queue_full", "", "1 while the durable queue is full and intake is refused or paused"))
        let byState = name("queue_tasks", "", "Tasks in the durable queue by state")
        queueTasks =
            durable
            ? Dictionary(
                uniqueKeysWithValues: Self.queueStates.map {
                    ($0, registry.makeGauge(descriptor: byState, labels: [("state", $0)]))
                }) : [:]
        queueOldestAge =
            durable
            ? registry.makeGauge(
                descriptor: name(
                    "queue_oldest_queued_age", "seconds",
                    "How long the oldest task waiting in the durable queue has waited (0 when none)"))
            : nil
        registry.makeGauge(
            descriptor: name(
                "build_info", "", "The running build: always 1, its version, commit and plugin ABI as labels"),
            labels: [
                ("version", BuildInfo.version), ("commit", BuildInfo.current.commit), ("abi", BuildInfo.abi),
                ("swift", BuildInfo.swift),
            ]
        ).set(Double(1))
    }

    /// The metrics of `task`'s executor and source.
    @inline(__always)
    func of(_ task: TaskItem<PipelineTask>) -> Labelled {
        let row = labelled[task.payload.executor]
        let source = task.payload.source
        for index in sourceNames.indices where sourceNames[index] == source { return row[index] }
        return row[row.count - 1]
    }

    /// Counts an input `source` rejected.
    func rejected(source: String) {
        for index in sourceNames.indices where sourceNames[index] == source {
            rejected[index].increment()
            return
        }
        rejected[rejected.count - 1].increment()
    }

    /// Sets the durable queue's gauges from its counts.
    func update(from depth: QueueDepth) {
        for (state, count) in depth.byState { queueTasks[state]?.set(Double(count)) }
        queueOldestAge?.set(depth.oldestQueuedAge ?? 0)
    }

    /// Counts a plugin's misbehaviour (``PluginMisbehaviour``), by executor, plugin and kind.
    func misbehaviour(_ event: PluginMisbehaviour, executor: String, plugin: String) {
        registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "taskhost", metricName: "plugin_misbehaviour", unitName: "total",
                helpText: "Breaches of the plugin ABI the host survived (taskhost_plugin.h)"),
            labels: [("executor", executor), ("plugin", plugin), ("kind", event.kind)]
        ).increment()
    }

    /// Counts an input a source could not take in: `queue_full` (HTTP 503, a file source paused),
    /// `buffer_full` (HTTP 429), `unavailable` (the run stops or the queue failed).
    func intakeRefused(source: String, reason: String) {
        registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "taskhost", metricName: "intake_refused", unitName: "total",
                helpText: "Appends a source could not make (requests answered 503/429, pauses of a file source)"),
            labels: [("source", source), ("reason", reason)]
        ).increment()
    }

    func update(from snapshot: SchedulerSnapshot) {
        running.set(Double(snapshot.running))
        queued.set(Double(snapshot.queued))
        busyTargets.set(Double(snapshot.busyTargets))
        readyTargets.set(Double(snapshot.readyTargets))
        backedOffTargets.set(Double(snapshot.backedOffTargets))
        parkedTargets.set(Double(snapshot.parkedTargets))
        oldestHeadAge.set(snapshot.oldestHeadAge.map { $0.seconds } ?? 0)
    }
}

/// What a source is doing, for `/readyz`.
enum SourceStatus: String, Sendable {
    /// Not taking input yet (an http source before its port is bound).
    case starting
    case serving
    /// Waiting for room in the full queue.
    case paused
    /// Its input ended (a file read once).
    case finished
}

/// Whether the pipeline takes input: each source's status and whether the queue is full. Shared by
/// the intakes, the compaction and `/readyz`.
final class PipelineHealth: Sendable {
    let sources: Mutex<[String: SourceStatus]>
    private let full = Atomic<Bool>(false)
    let metrics: PipelineMetrics

    init(sources: [String], metrics: PipelineMetrics) {
        self.sources = Mutex(Dictionary(uniqueKeysWithValues: sources.map { ($0, .starting) }))
        self.metrics = metrics
        metrics.queueFull.set(Double(0))
    }

    var queueFull: Bool { full.load(ordering: .relaxed) }

    private let warnedStuck = Atomic<Bool>(false)

    func setQueueFull(_ value: Bool) {
        if full.exchange(value, ordering: .relaxed) != value { metrics.queueFull.set(Double(value ? 1 : 0)) }
        if !value { warnedStuck.store(false, ordering: .relaxed) }
    }

    /// True once per time the queue is full with nothing left to finish: the caller warns.
    func warnStuck() -> Bool { !warnedStuck.exchange(true, ordering: .relaxed) }

    func set(_ source: String, _ status: SourceStatus) { sources.withLock { $0[source] = status } }
}

/// What `/readyz` checks beside the sources and the queue's room.
struct Readiness: Sendable {
    let health: PipelineHealth
    /// Why the durable queue failed, if it did.
    let queueFailure: @Sendable () -> String?
    let durable: Bool
    /// Executors made (plugins loaded, functions resolved) of those configured.
    let executors: (loaded: Int, configured: Int)

    /// The answer: ready, and a JSON body naming each part and what is not ready.
    func check(shuttingDown: Bool) -> (ready: Bool, body: [UInt8]) {
        var problems: [String] = []
        let sources = health.sources.withLock { $0 }.sorted { $0.key < $1.key }
        for (name, status) in sources where status == .starting || status == .paused {
            problems.append(
                status == .starting ? "source \(name) is not serving yet" : "source \(name) waits for room in the queue"
            )
        }
        let queue: String
        if let failure = queueFailure() {
            queue = "failed"
            problems.append("the queue failed: \(failure)")
        } else if health.queueFull {
            queue = "full"
            problems.append("the queue is full (queue.maxSizeMB or the disk): intake is refused until tasks finish")
        } else {
            queue = durable ? "writable" : "memory"
        }
        if executors.loaded < executors.configured {
            problems.append("\(executors.configured - executors.loaded) executors are not loaded")
        }
        if shuttingDown { problems.append("the pipeline is stopping") }
        var body = JSONObjectWriter()
        body.add("ready", raw: problems.isEmpty ? "true" : "false")
        body.add(
            "sources",
            raw: "{" + sources.map { "\(quote($0.key)):\(quote($0.value.rawValue))" }.joined(separator: ",") + "}")
        body.add("queue", queue)
        body.add("executors", raw: "{\"loaded\":\(executors.loaded),\"configured\":\(executors.configured)}")
        body.add("problems", raw: "[" + problems.map(quote).joined(separator: ",") + "]")
        return (problems.isEmpty, body.finished)
    }
}

/// `/metrics` (Prometheus text), `/livez` (alias `/healthz`), `/readyz` and `/status` (JSON) on
/// the metrics address.
func operationsRouter(
    metrics: PipelineMetrics, snapshot: @escaping @Sendable () -> SchedulerSnapshot?,
    perSource: @escaping @Sendable () -> [String: Int],
    durableQueued: (@Sendable () async -> QueueDepth?)? = nil,
    readiness: Readiness? = nil
) -> Router<BasicRequestContext> {
    let router = Router()
    router.get("/metrics") { _, _ -> Response in
        if let snapshot = snapshot() { metrics.update(from: snapshot) }
        if let durableQueued, let depth = await durableQueued() {
            metrics.durableQueued?.set(Double(depth.waiting))
            metrics.update(from: depth)
        }
        var body = metrics.registry.emitToBuffer()
        body += ProcessMetrics.read().text.utf8
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4"
        return Response(
            status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
    // Liveness: the process answers (its event loops run). `/healthz` is kept as its alias.
    router.get("/livez") { _, _ -> String in "ok\n" }
    router.get("/healthz") { _, _ -> String in "ok\n" }
    // Readiness: every source serving, the queue writable and not full, the executors loaded.
    router.get("/readyz") { _, _ -> Response in
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        guard let readiness else {
            return Response(
                status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "{\"ready\":true}")))
        }
        let (ready, body) = readiness.check(shuttingDown: snapshot()?.shuttingDown ?? false)
        return Response(
            status: ready ? .ok : .serviceUnavailable, headers: headers,
            body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
    router.get("/status") { _, _ -> Response in
        var status = JSONObjectWriter()
        if let s = snapshot() {
            status.add("running", s.running)
            status.add("queued", s.queued)
            status.add("busyTargets", s.busyTargets)
            status.add("readyTargets", s.readyTargets)
            status.add("backedOffTargets", s.backedOffTargets)
            status.add("parkedTargets", s.parkedTargets)
            status.add("intakeFinished", raw: s.intakeFinished ? "true" : "false")
            status.add("shuttingDown", raw: s.shuttingDown ? "true" : "false")
        }
        if let durableQueued, let depth = await durableQueued() { status.add("durableQueued", depth.waiting) }
        let sources = perSource().sorted { $0.key < $1.key }.map { "\(quote($0.key)):\($0.value)" }
        status.add("sources", raw: "{" + sources.joined(separator: ",") + "}")
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: status.finished)))
    }
    return router
}
