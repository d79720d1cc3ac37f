import Foundation
import Logging
import TaskHostStore

#if canImport(Glibc)
    import Glibc
#endif

/// A JSON Lines file, read once or followed as it grows (`follow`, by name as `tail -F` does: across
/// rotation and truncation). On the durable queue it resumes after its last committed line; each
/// batch of lines commits with the checkpoint of the file it was read from.
struct FileSource: TaskSource {
    let name: String
    let path: String
    let follow: Bool

    func run(into intake: some SourceIntake, stopper: StopSignal, logger: Logger) async throws(SourceError) {
        let start = await intake.start(file: path)
        if start.complete { return }
        let (name, path) = (self.name, self.path)
        if follow {
            let keepsCheckpoints = intake.keepsCheckpoints
            try await followLines(
                path: path, from: FollowStart(offset: start.offset, rotated: start.rotated), stopper: stopper,
                logger: logger, flush: { await intake.flush() }
            ) { line, end, file in
                let checkpoint =
                    keepsCheckpoints
                    ? Checkpoint(
                        source: name, file: path, device: file.device, inode: file.inode, offset: end, complete: false)
                    : nil
                return await intake.admit(line, checkpoint: checkpoint)
            }
            return
        }
        let identity = intake.keepsCheckpoints ? fileIdentity(path) : nil
        try await readLines(
            path: path, from: start.offset, stopper: stopper, flush: { await intake.flush() }
        ) { line, end in
            let checkpoint = identity.map {
                Checkpoint(source: name, file: path, device: $0.device, inode: $0.inode, offset: end, complete: false)
            }
            return await intake.admit(line, checkpoint: checkpoint)
        }
    }
}

/// Standard input, as JSON Lines, until its end.
struct StdinSource: TaskSource {
    let name: String

    func run(into intake: some SourceIntake, stopper: StopSignal, logger: Logger) async throws(SourceError) {
        _ = await intake.start(file: nil)
        let reader = DescriptorReader(descriptor: 0)
        stopper.register(reader)
        var splitter = LineSplitter()
        while let chunk = await reader.read(), !chunk.isEmpty {
            if !(await splitter.feed(chunk, { line, _ in await intake.admit(line) })) { break }
            await intake.flush()
        }
        if let (last, _) = splitter.finish() { _ = await intake.admit(last) }
        await intake.flush()
    }
}

/// A spool folder: each file is a batch of JSON lines, moved to done/ or failed/ when all its
/// tasks are final. New files are picked up as they are closed or moved in (inotify). On the
/// durable queue each file is read from its checkpoint, and a batch survives restarts.
struct DirectorySource: TaskSource {
    let name: String
    let folder: String

    func run(into intake: some SourceIntake, stopper: StopSignal, logger: Logger) async throws(SourceError) {
        _ = await intake.start(file: nil)
        let manager = FileManager.default
        for sub in ["done", "failed"] {
            try? manager.createDirectory(atPath: folder + "/" + sub, withIntermediateDirectories: true)
        }
        guard let watch = Watch(path: folder, mask: UInt32(IN_CLOSE_WRITE | IN_MOVED_TO)) else {
            throw SourceError(
                path: folder, message: "cannot watch the spool folder: check that it exists and is readable")
        }
        let waiter = DescriptorReader(descriptor: -1)
        stopper.register(waiter)
        var seen = Set<String>()
        // At start, the files already there; then only files named by an event: closed after
        // writing, or moved in. A file still being written is never read half-way.
        var names = (try? manager.contentsOfDirectory(atPath: folder)) ?? []
        while !stopper.isStopped.load(ordering: .acquiring) {
            names = names.sorted().filter { !$0.hasPrefix(".") && $0 != "done" && $0 != "failed" && !seen.contains($0) }
            for file in names {
                let path = folder + "/" + file
                var isFolder: ObjCBool = false
                guard manager.fileExists(atPath: path, isDirectory: &isFolder), !isFolder.boolValue,
                    seen.insert(file).inserted  // one file can be named by several events
                else { continue }
                let (tracker, offset, complete) = await intake.openBatch(file)
                if complete {
                    tracker.endOfFile()
                    continue
                }
                let identity = intake.keepsCheckpoints ? fileIdentity(path) : nil
                let name = self.name
                let checkpoint: @Sendable (Int64, Bool) -> Checkpoint? = { end, complete in
                    identity.map {
                        Checkpoint(
                            source: name, file: file, device: $0.device, inode: $0.inode, offset: end,
                            complete: complete)
                    }
                }
                do {
                    try await readLines(
                        path: path, from: offset, stopper: stopper, flush: { await intake.flush() }
                    ) { line, end in
                        await intake.admit(line, batch: tracker, checkpoint: checkpoint(end, false))
                    }
                } catch {
                    // Gone between the event and the read (a temporary file renamed away): not a batch.
                    logger.debug("spool file skipped: \(error)")
                    intake.dropBatch(file)
                    continue
                }
                if stopper.isStopped.load(ordering: .acquiring) { return }
                if let done = checkpoint(identity?.size ?? 0, true) {
                    intake.mark(done)
                    guard await intake.flush() else { return }
                }
                tracker.endOfFile()
            }
            guard let events = await waiter.waitForEvents(on: watch.descriptor) else { return }
            names = inotifyNames(events)
        }
    }
}
