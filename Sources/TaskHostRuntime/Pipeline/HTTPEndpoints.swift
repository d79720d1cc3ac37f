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
final class PipelineMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let succeeded: Prometheus.Counter
    let deadLettered: Prometheus.Counter
    let rejected: Prometheus.Counter
    let parked: Prometheus.Counter
    let cancelled: Prometheus.Counter
    let retries: Prometheus.Counter
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
    let queueWait: DurationHistogram
    let execution: DurationHistogram

    init(durable: Bool) {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "taskhost", metricName: metric, unitName: unit, helpText: help)
        }
        func outcome(_ name: String) -> Prometheus.Counter {
            registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "taskhost", metricName: "tasks", unitName: "total",
                    helpText: "Tasks that reached a final state"),
                labels: [("outcome", name)])
        }
        succeeded = outcome("succeeded")
        deadLettered = outcome("dead_lettered")
        rejected = outcome("rejected")
        parked = outcome("parked")
        cancelled = outcome("cancelled")
        retries = registry.makeCounter(descriptor: name("retries", "total", "Attempts that failed and were retried"))
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
        let buckets: [Duration] = [
            .microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100),
            .milliseconds(500), .seconds(1), .seconds(5), .seconds(30),
        ]
        queueWait = registry.makeDurationHistogram(
            descriptor: name("queue_wait", "seconds", "Time from ready to start"), buckets: buckets)
        execution = registry.makeDurationHistogram(
            descriptor: name("execution", "seconds", "Time in the executor per attempt"), buckets: buckets)
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

/// `/metrics` (Prometheus text), `/healthz` and `/status` (JSON) on the metrics address.
func operationsRouter(
    metrics: PipelineMetrics, snapshot: @escaping @Sendable () -> SchedulerSnapshot?,
    perSource: @escaping @Sendable () -> [String: Int],
    durableQueued: (@Sendable () async -> Int?)? = nil
) -> Router<BasicRequestContext> {
    let router = Router()
    router.get("/metrics") { _, _ -> Response in
        if let snapshot = snapshot() { metrics.update(from: snapshot) }
        if let durableQueued, let count = await durableQueued() { metrics.durableQueued?.set(Double(count)) }
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4"
        return Response(
            status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.registry.emitToBuffer())))
    }
    router.get("/healthz") { _, _ -> String in "ok\n" }
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
        if let durableQueued, let count = await durableQueued() { status.add("durableQueued", count) }
        let sources = perSource().sorted { $0.key < $1.key }.map { "\(quote($0.key)):\($0.value)" }
        status.add("sources", raw: "{" + sources.joined(separator: ",") + "}")
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: status.finished)))
    }
    return router
}
