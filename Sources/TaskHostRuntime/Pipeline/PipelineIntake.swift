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
final class PipelineIntake<Store: PipelineStore>: SourceIntake {
    let pipeline: Pipeline
    let source: SourceConfig
    let intake: Intake<Store>
    let store: Store
    let stopper: StopSignal
    let schedulerIsFull: @Sendable () -> Bool
    let decoder: InputDecoder
    /// The last sequence number given out: a source's lines are numbered in order of arrival.
    let sequence = Atomic<UInt64>(0)

    init(
        pipeline: Pipeline, source: SourceConfig, store: Store, stopper: StopSignal,
        isFull: @escaping @Sendable () -> Bool
    ) {
        self.pipeline = pipeline
        self.source = source
        self.store = store
        self.stopper = stopper
        self.schedulerIsFull = isFull
        intake = Intake(store: store) { [pipeline] duplicates in
            for (task, existing) in duplicates { pipeline.writeDuplicate(task, existing: existing) }
        }
        decoder = InputDecoder(
            source: source, executors: pipeline.config.executors.map(\.name), maxTaskBytes: source.maxTaskBytes)
    }

    func start(file: String?) async -> (offset: Int64, complete: Bool, rotated: String?) {
        let point = await store.start(source: source.name, file: file, pipeline: pipeline)
        sequence.store(point.seq - 1, ordering: .relaxed)
        // An http source serves once its port is bound (``serving()``); the others from here.
        if case .http = source.input {} else { serving() }
        return (point.offset, point.complete, point.rotated)
    }

    func serving() { pipeline.health.set(source.name, .serving) }

    func accept(_ line: String, batch: BatchTracker?, checkpoint: Checkpoint?) async -> Admitted {
        let seq = sequence.add(1, ordering: .relaxed).newValue
        pipeline.counters.sources[source.name]?.value.add(1, ordering: .relaxed)
        switch decoder.decode(line, seq: seq, batch: batch) {
        case .success(let item):
            if intake.add(item, checkpoint: checkpoint) { await flush() }
            return Admitted(id: item.id ?? "\(source.name)-\(seq)", error: nil)
        case .failure(let rejection):
            refuse(line, seq: seq, reason: rejection.reason, batch: batch)
            intake.reject(rejectedRow(line, seq: seq, reason: rejection.reason, batch: batch), checkpoint: checkpoint)
            return Admitted(id: nil, error: rejection.reason)
        }
    }

    /// A line that could not be read: counted, logged and written to the dead letters.
    private func refuse(_ line: String, seq: UInt64, reason: String, batch: BatchTracker?) {
        pipeline.counters.rejected.add(1, ordering: .relaxed)
        // Answered to its sender (400 with the reason): reported, not a failure of the run.
        if source.kind == .http { pipeline.counters.rejectedAnswered.add(1, ordering: .relaxed) }
        pipeline.metrics.rejected(source: source.name)
        batch?.rejected()
        pipeline.deadLetters?.write(
            bytes: deadLetterLine(
                id: nil, target: nil, source: source.name, seq: seq, input: line, error: reason, attempts: 0))
        pipeline.logger.warning(
            "task rejected",
            metadata: ["source": "\(source.name)", "seq": .stringConvertible(seq), "reason": "\(reason)"])
    }

    private func rejectedRow(_ line: String, seq: UInt64, reason: String, batch: BatchTracker?) -> NewTask {
        NewTask(
            source: source.name, seq: seq, taskId: nil, target: nil, executor: nil, priority: 0, payload: nil,
            raw: line, batch: batch?.name, rejected: reason)
    }

    /// Hands on what was accepted. While the durable queue is full the source waits here (it
    /// reads nothing more), trying again with a growing delay, until there is room or the run
    /// stops; false when the run stops or the queue failed.
    @discardableResult
    func flush() async -> Bool {
        var result = await intake.flush()
        guard case .full = result else { return result.succeeded }
        pipeline.metrics.intakeRefused(source: source.name, reason: "queue_full")
        pipeline.health.set(source.name, .paused)
        pipeline.health.setQueueFull(true)
        pipeline.logger.warning(
            "the queue is full: the source waits for room (tasks finishing, compaction)",
            metadata: ["source": "\(source.name)"])
        var delay = Duration.milliseconds(50)
        while case .full = result, canContinue {
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(2))
            result = await intake.flush()
            if case .full = result { pipeline.health.setQueueFull(true) }
        }
        if result.succeeded {
            pipeline.health.setQueueFull(false)
            pipeline.health.set(source.name, .serving)
            pipeline.logger.notice(
                "the queue has room again: the source goes on", metadata: ["source": "\(source.name)"])
        }
        return result.succeeded
    }

    func acceptAll(_ lines: [String]) async -> BatchOutcome {
        if isFull {
            pipeline.metrics.intakeRefused(source: source.name, reason: "buffer_full")
            return .busy(retryAfter: 1)
        }
        if let failure = store.failureMessage {
            pipeline.metrics.intakeRefused(source: source.name, reason: "unavailable")
            return .unavailable("the queue failed: \(failure)")
        }
        let first = sequence.add(UInt64(lines.count), ordering: .relaxed).newValue - UInt64(lines.count) + 1
        pipeline.counters.sources[source.name]?.value.add(lines.count, ordering: .relaxed)
        var tasks: [TaskItem<PipelineTask>] = []
        var refused: [NewTask] = []
        var decoded: [Result<TaskItem<PipelineTask>, InputDecoder.Rejection>] = []
        for (offset, line) in lines.enumerated() {
            let result = decoder.decode(line, seq: first + UInt64(offset), batch: nil)
            switch result {
            case .success(let item): tasks.append(item)
            case .failure(let rejection):
                refused.append(rejectedRow(line, seq: first + UInt64(offset), reason: rejection.reason, batch: nil))
            }
            decoded.append(result)
        }
        // One append: all of the request's lines, or none.
        let result = await store.submit(tasks, refused: refused, checkpoint: nil).wait()
        let duplicates: [Int: ExistingTask]
        switch result {
        case .committed(let found): duplicates = found
        case .full:
            pipeline.metrics.intakeRefused(source: source.name, reason: "queue_full")
            pipeline.health.setQueueFull(true)
            return .queueFull(retryAfter: 1)
        case .failed:
            pipeline.metrics.intakeRefused(source: source.name, reason: "unavailable")
            return .unavailable(store.failureMessage.map { "the queue failed: \($0)" } ?? "the pipeline is stopping")
        }
        if store.isDurable { pipeline.health.setQueueFull(false) }
        var answers: [Admitted] = []
        var taskIndex = 0
        for (offset, result) in decoded.enumerated() {
            let seq = first + UInt64(offset)
            switch result {
            case .success(let item):
                let id = item.id ?? "\(source.name)-\(seq)"
                if let existing = duplicates[taskIndex] {
                    pipeline.writeDuplicate(item, existing: existing)
                    answers.append(Admitted(id: id, error: nil, duplicateOf: existing.state.name))
                } else {
                    answers.append(Admitted(id: id, error: nil))
                }
                taskIndex += 1
            case .failure(let rejection):
                refuse(lines[offset], seq: seq, reason: rejection.reason, batch: nil)
                answers.append(Admitted(id: nil, error: rejection.reason))
            }
        }
        return .admitted(answers)
    }

    var canContinue: Bool { !stopper.isStopped.load(ordering: .acquiring) && store.failureMessage == nil }

    var keepsCheckpoints: Bool { store.isDurable }

    func openBatch(_ name: String) async -> (tracker: BatchTracker, offset: Int64, complete: Bool) {
        await store.openBatch(name, of: source, pipeline: pipeline)
    }

    func dropBatch(_ name: String) { store.dropBatch(name, of: source.name) }

    func mark(_ checkpoint: Checkpoint) { intake.mark(checkpoint) }

    /// With `queue: memory` a full buffer refuses new tasks (HTTP 429); a durable store takes
    /// them (they wait in the queue).
    var isFull: Bool { !store.isDurable && schedulerIsFull() }

    var failure: String? { store.failureMessage }
}
