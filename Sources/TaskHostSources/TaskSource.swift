import Logging
import TaskHostConfig
import TaskHostStore

/// Where a source hands what it reads: the pipeline's intake for that source. It decodes each
/// line into a task (or a dead letter), numbers it, and commits it to the store before the source
/// acknowledges it (an HTTP answer, a file checkpoint).
package protocol SourceIntake: Sendable {
    /// Decodes and admits one input line; returns its task id, or why it was refused.
    func accept(_ line: String, batch: BatchTracker?, checkpoint: Checkpoint?) async -> Admitted
    /// Hands on what was accepted (on the durable queue: commits it); false when the queue failed.
    @discardableResult func flush() async -> Bool
    /// Whether the source should go on reading: the run is not stopping and the queue is healthy.
    var canContinue: Bool { get }
    /// Whether the source should record checkpoints (the durable queue keeps them).
    var keepsCheckpoints: Bool { get }
    /// Where a source starts: after the last committed line of `file` (the durable queue), or at
    /// the start. `complete`: an earlier run read it to its end and marked it so. `rotated`: the
    /// file the offset applies to, found under another name (the file was rotated since).
    func start(file: String?) async -> (offset: Int64, complete: Bool, rotated: String?)
    /// A batch file of a spool folder: its tracker (resumed from an earlier run, or new) and
    /// where to read it from.
    func openBatch(_ name: String) async -> (tracker: BatchTracker, offset: Int64, complete: Bool)
    /// A batch file that vanished before it was read: forgotten.
    func dropBatch(_ name: String)
    /// Records a checkpoint with the next commit (a spool file read to its end).
    func mark(_ checkpoint: Checkpoint)
    /// The intake refuses new tasks for now (the scheduler's buffer is full): HTTP answers 429.
    var isFull: Bool { get }
    /// Why the queue failed, when it did.
    var failure: String? { get }
    /// Decodes and admits the lines of one request as one append: all of them are committed, or
    /// none (the queue is full, the run stops). For sources that answer each request (HTTP).
    func acceptAll(_ lines: [String]) async -> BatchOutcome
    /// The source takes input now (HTTP: its port is bound): the pipeline may report it ready.
    func serving()
}

/// What became of the lines of one request (``SourceIntake/acceptAll(_:)``).
package enum BatchOutcome: Sendable {
    /// Appended (or refused as malformed, or answered as duplicates), line by line.
    case admitted([Admitted])
    /// The durable queue is full: nothing was appended; try again after `retryAfter` seconds.
    case queueFull(retryAfter: Int)
    /// The scheduler's buffer is full (`queue: memory`): nothing was appended.
    case busy(retryAfter: Int)
    /// The run stops, or the queue failed: nothing was appended.
    case unavailable(String)
}

/// What became of one input line.
package struct Admitted: Sendable {
    /// The task's id (the producer's, or `SOURCE-SEQ`); nil when refused.
    package var id: String?
    /// Why it was refused (it went to the dead letters); nil when admitted.
    package var error: String?
    /// The state of the task that already holds this id (`queued`, `running`, `succeeded`,
    /// `deadLettered`): this line was a duplicate and was not queued again.
    package var duplicateOf: String?

    package init(id: String?, error: String?, duplicateOf: String? = nil) {
        self.id = id
        self.error = error
        self.duplicateOf = duplicateOf
    }
}

extension SourceIntake {
    /// Line by line, then one flush: not atomic (the pipeline's intake is; this serves test doubles).
    package func acceptAll(_ lines: [String]) async -> BatchOutcome {
        var results: [Admitted] = []
        for line in lines { results.append(await accept(line, batch: nil, checkpoint: nil)) }
        return await flush() ? .admitted(results) : .unavailable(failure ?? "the pipeline is stopping")
    }

    package func serving() {}

    /// Accepts a line; whether the source should go on.
    package func admit(_ line: String, batch: BatchTracker? = nil, checkpoint: Checkpoint? = nil) async -> Bool {
        _ = await accept(line, batch: batch, checkpoint: checkpoint)
        return canContinue
    }
}

/// One kind of source: reads its input and hands each line to its intake until the input ends or
/// `stopper` stops it.
package protocol TaskSource: Sendable {
    var name: String { get }
    func run(into intake: some SourceIntake, stopper: StopSignal, logger: Logger) async throws(SourceError)
}

/// A source that cannot go on: it names the file or address and says what is wrong.
package struct SourceError: Error, CustomStringConvertible, Sendable {
    package var path: String
    package var message: String

    package init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    package var description: String { "\(path): \(message)" }
}

/// The source a configuration describes.
package func makeSource(_ config: SourceConfig) -> any TaskSource {
    switch config.input {
    case .file(let path, let follow): FileSource(name: config.name, path: path, follow: follow)
    case .stdin: StdinSource(name: config.name)
    case .directory(let path): DirectorySource(name: config.name, folder: path)
    case .http(let listen, let token, let maxBodyBytes):
        HTTPSource(name: config.name, listen: listen, token: token, maxBodyBytes: maxBodyBytes)
    case .interval(let schedule, let template, let count):
        IntervalSource(name: config.name, schedule: schedule, template: template, count: count)
    }
}
