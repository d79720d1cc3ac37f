import AsyncAlgorithms
import Logging
import Synchronization
import TaskHostConfig
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

/// One source's intake in a pipeline (``SourceIntake``): decodes and numbers each line, sends a
/// task on (to the scheduler, or committed to the durable queue first) or a malformed line to the
/// dead letters, and keeps the source's checkpoints and batch files.
final class PipelineIntake: SourceIntake {
    let pipeline: Pipeline
    let source: SourceConfig
    let intake: Intake
    let durable: DurableRun?
    let stopper: StopSignal
    let schedulerIsFull: @Sendable () -> Bool
    let decoder: InputDecoder
    /// The last sequence number given out: a source's lines are numbered in order of arrival.
    let sequence = Atomic<UInt64>(0)

    init(
        pipeline: Pipeline, source: SourceConfig, channel: AsyncChannel<[TaskItem<PipelineTask>]>,
        durable: DurableRun?, stopper: StopSignal, isFull: @escaping @Sendable () -> Bool
    ) {
        self.pipeline = pipeline
        self.source = source
        self.durable = durable
        self.stopper = stopper
        self.schedulerIsFull = isFull
        let executors = pipeline.config.executors.map(\.name)
        intake = Intake(channel: channel, durable: durable, executorNames: executors)
        decoder = InputDecoder(source: source, executors: executors, maxTaskBytes: source.maxTaskBytes)
    }

    func start(file: String?) async -> (offset: Int64, complete: Bool) {
        guard let durable else { return (0, false) }
        let point = await pipeline.resumePoint(source.name, file: file, run: durable)
        sequence.store(point.seq - 1, ordering: .relaxed)
        return (point.offset, point.complete)
    }

    func accept(_ line: String, batch: BatchTracker?, checkpoint: Checkpoint?) async -> Admitted {
        let seq = sequence.add(1, ordering: .relaxed).newValue
        pipeline.counters.sources[source.name]?.value.add(1, ordering: .relaxed)
        switch decoder.decode(line, seq: seq, batch: batch) {
        case .success(let item):
            // Tasks go on in batches, one per chunk read, at most 256: a hand-off per task would
            // cost a task switch (or a commit) each.
            if intake.add(item, checkpoint: checkpoint) { await intake.flush() }
            return Admitted(id: item.id ?? "\(source.name)-\(seq)", error: nil)
        case .failure(let rejection):
            pipeline.counters.rejected.add(1, ordering: .relaxed)
            pipeline.metrics.rejected.increment()
            batch?.rejected()
            pipeline.deadLetters?.write(
                bytes: deadLetterLine(
                    id: nil, target: nil, source: source.name, seq: seq, input: line, error: rejection.reason,
                    attempts: 0))
            intake.reject(
                NewTask(
                    source: source.name, seq: seq, taskId: nil, target: nil, executor: nil, priority: 0,
                    payload: nil, raw: line, batch: batch?.name, rejected: rejection.reason),
                checkpoint: checkpoint)
            pipeline.logger.warning(
                "task rejected",
                metadata: ["source": "\(source.name)", "seq": "\(seq)", "reason": "\(rejection.reason)"])
            return Admitted(id: nil, error: rejection.reason)
        }
    }

    @discardableResult
    func flush() async -> Bool { await intake.flush() }

    var canContinue: Bool { !stopper.isStopped.load(ordering: .acquiring) && durable?.hasFailed != true }

    var keepsCheckpoints: Bool { durable != nil }

    func openBatch(_ name: String) async -> (tracker: BatchTracker, offset: Int64, complete: Bool) {
        let key = source.name + "/" + name
        let resumed = durable?.trackers.withLock { $0[key] }
        let tracker = resumed ?? pipeline.spoolTracker(source, name: name, run: durable)
        guard let durable else { return (tracker, 0, false) }
        let point = await pipeline.resumePoint(source.name, file: name, run: durable)
        if resumed == nil { durable.trackers.withLock { $0[key] = tracker } }
        return (tracker, point.offset, point.complete)
    }

    func dropBatch(_ name: String) {
        durable?.trackers.withLock { _ = $0.removeValue(forKey: source.name + "/" + name) }
    }

    func mark(_ checkpoint: Checkpoint) { intake.mark(checkpoint) }

    /// With `queue: memory` a full buffer refuses new tasks (HTTP 429); the durable queue takes
    /// them.
    var isFull: Bool { durable == nil && schedulerIsFull() }

    var failure: String? { durable?.failure.withLock { $0?.message } }
}
