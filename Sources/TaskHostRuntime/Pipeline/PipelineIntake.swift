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
        intake = Intake(store: store)
        decoder = InputDecoder(
            source: source, executors: pipeline.config.executors.map(\.name), maxTaskBytes: source.maxTaskBytes)
    }

    func start(file: String?) async -> (offset: Int64, complete: Bool) {
        let point = await store.start(source: source.name, file: file, pipeline: pipeline)
        sequence.store(point.seq - 1, ordering: .relaxed)
        return (point.offset, point.complete)
    }

    func accept(_ input: SourceLine, batch: BatchTracker?, checkpoint: Checkpoint?) async -> Admitted {
        let seq = sequence.add(1, ordering: .relaxed).newValue
        pipeline.counters.sources[source.name]?.value.add(1, ordering: .relaxed)
        let (line, decoded) = decoder.decode(input, seq: seq, batch: batch)
        switch decoded {
        case .success(let item):
            if intake.add(item, checkpoint: checkpoint) { await intake.flush() }
            return Admitted(id: item.id ?? "\(source.name)-\(seq)", error: nil)
        case .failure(let rejection):
            pipeline.counters.rejected.add(1, ordering: .relaxed)
            pipeline.metrics.rejected.increment()
            batch?.rejected()
            pipeline.deadLetters?.write(
                bytes: deadLetterLine(input, text: line, source: source.name, seq: seq, error: rejection.reason))
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
