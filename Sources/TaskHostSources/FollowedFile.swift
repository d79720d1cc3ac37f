import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Which file a path named when a line was read: a checkpoint applies to this file only.
package struct FileIdentity: Equatable, Sendable {
    package var device: Int64
    package var inode: Int64

    package init(device: Int64, inode: Int64) {
        self.device = device
        self.inode = inode
    }
}

/// Where a followed file source starts: `offset` in the file the path names, or, when the file
/// read last was rotated away since (`rotated`, such as `in.jsonl.1`), `offset` in that one, and
/// then the file at the path from its start.
package struct FollowStart: Sendable {
    package var offset: Int64
    package var rotated: String?

    package init(offset: Int64, rotated: String? = nil) {
        self.offset = offset
        self.rotated = rotated
    }
}

/// Follows the file a path names, as `tail -F` does, and hands on each line with the offset of the
/// byte after it and the file it is in. When the path names another file (logrotate's create
/// mode: `mv in.jsonl in.jsonl.1`, then a new `in.jsonl`), the old file is read to its end first:
/// it stays open until the new one has its first byte (a writer that has not reopened its file
/// yet still appends to the old one), then the new one is read from its start. A file shorter
/// than the offset read (copytruncate) is read again from its start. A missing path is waited
/// for. Wakes on inotify events of the file and its folder, and at least once a second.
/// Returns when `stopper` stops or `line` answers false.
package func followLines(
    path: String, from start: FollowStart, stopper: StopSignal, logger: Logger, flush: () async -> Void,
    _ line: @escaping (SourceLine, Int64, FileIdentity) async -> Bool
) async throws(SourceError) {
    let waiter = DescriptorReader(descriptor: -1)
    stopper.register(waiter)
    let watch = FollowWatch(path: path)
    var file: OpenFile?
    var splitter = LineSplitter()
    var replaced = false
    var offset = start.offset
    if let rotated = start.rotated {
        if let old = try OpenFile(rotated) {
            file = old
        } else {
            offset = 0
        }
    }
    if file == nil { file = try OpenFile(path) }
    if let file {
        lseek(file.descriptor, off_t(offset), SEEK_SET)
        splitter = LineSplitter(base: offset)
        watch.watch(file)
    } else {
        logger.warning("the file does not exist (yet): waiting for it", metadata: ["file": "\(path)"])
    }
    while !stopper.isStopped.load(ordering: .acquiring) {
        if let current = file {
            guard let chunk = await waiter.read(from: current.descriptor) else { return }
            if !chunk.isEmpty {
                let identity = current.identity
                let goOn = await splitter.feed(chunk) { text, end in await line(text, end, identity) }
                await flush()
                if !goOn { return }
                continue
            }
            await flush()
            // At the end of the file: truncated in place, or replaced by another file?
            let (size, links) = current.status()
            let position = Int64(lseek(current.descriptor, 0, SEEK_CUR))
            if size < position {
                logger.info(
                    "the file was truncated: reading it from the start",
                    metadata: ["file": "\(path)", "size": "\(size)", "offset": "\(position)"])
                lseek(current.descriptor, 0, SEEK_SET)
                splitter = LineSplitter()
                continue
            }
            let named = statIdentity(path)
            if let named, named.identity != current.identity, named.size == 0, links > 0 {
                // A new file, empty yet: the old one stays open until the new one gets its first byte.
                watch.watchNext(path)
            }
            if let named, named.identity != current.identity, named.size > 0 || links == 0 {
                // Read the old file to its end once more after seeing the new one: what was
                // appended in between belongs to the old one.
                if !replaced {
                    replaced = true
                    continue
                }
                if let next = try OpenFile(path) {
                    if let (text, end) = splitter.finish() {
                        let goOn = await line(text, end, current.identity)
                        await flush()
                        if !goOn { return }
                    }
                    logger.info(
                        "the file was replaced (rotated): reading the new one from its start",
                        metadata: ["file": "\(path)"])
                    watch.watch(next)
                    file = next
                    splitter = LineSplitter()
                    replaced = false
                    continue
                }
            }
            replaced = false
        } else if let opened = try OpenFile(path) {
            logger.info("the file appeared: reading it from its start", metadata: ["file": "\(path)"])
            watch.watch(opened)
            file = opened
            splitter = LineSplitter()
            continue
        }
        guard await waiter.waitForEvents(on: watch.descriptor, timeout: 1000) != nil else { return }
    }
}

/// The file a path names now, with its size; nil when there is none.
func statIdentity(_ path: String) -> (identity: FileIdentity, size: Int64)? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    return (FileIdentity(device: Int64(info.st_dev), inode: Int64(info.st_ino)), Int64(info.st_size))
}

/// The file whose device and inode are given, among the files beside `path` whose name begins
/// with its name up to the first dot (`in.jsonl.1`, `in.jsonl-20261207`, `in-20261207.jsonl` for
/// `in.jsonl`): where a rotated file went. Nil when there is none (compressed, moved to another
/// folder, or deleted).
package func rotatedFile(of path: String, device: Int64, inode: Int64) -> (path: String, size: Int64)? {
    let url = URL(fileURLWithPath: path)
    let folder = url.deletingLastPathComponent().path
    let name = url.lastPathComponent
    let stem = name.split(separator: ".", omittingEmptySubsequences: false).first.map(String.init) ?? name
    let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
    for sibling in names.sorted() where sibling != name && sibling.hasPrefix(stem.isEmpty ? name : stem) {
        let candidate = folder + "/" + sibling
        if let found = statIdentity(candidate), found.identity == FileIdentity(device: device, inode: inode) {
            return (candidate, found.size)
        }
    }
    return nil
}

/// A file open for reading; closed with the last reference.
private final class OpenFile {
    let descriptor: Int32
    let identity: FileIdentity

    /// Opens `path`; nil when it does not exist.
    init?(_ path: String) throws(SourceError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            if errno == ENOENT { return nil }
            throw SourceError(path: path, message: "cannot open (\(String(cString: strerror(errno))))")
        }
        var info = stat()
        fstat(descriptor, &info)
        self.descriptor = descriptor
        identity = FileIdentity(device: Int64(info.st_dev), inode: Int64(info.st_ino))
    }

    deinit { close(descriptor) }

    /// The file's size now, and how many names it has left (0 once deleted).
    func status() -> (size: Int64, links: Int) {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { return (0, 0) }
        return (Int64(info.st_size), Int(info.st_nlink))
    }
}

/// inotify on a followed file (appends, truncation), on its folder (a new file under its name),
/// and on a new file that is empty yet (its first byte).
private final class FollowWatch {
    let descriptor: Int32
    private var fileWatch: Int32 = -1
    private var nextWatch: Int32 = -1

    init(path: String) {
        descriptor = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        if descriptor >= 0 { _ = inotify_add_watch(descriptor, folder, UInt32(IN_CREATE | IN_MOVED_TO)) }
    }

    deinit { if descriptor >= 0 { close(descriptor) } }

    /// Watches `file` (through its descriptor: the file open, whatever its name is now) instead
    /// of the one watched before.
    func watch(_ file: OpenFile) {
        guard descriptor >= 0 else { return }
        if fileWatch >= 0 { inotify_rm_watch(descriptor, fileWatch) }
        fileWatch = inotify_add_watch(
            descriptor, "/proc/self/fd/\(file.descriptor)", UInt32(IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF))
        // The file that was next is this one now (the same watch), or another that is not.
        if nextWatch >= 0, nextWatch != fileWatch { inotify_rm_watch(descriptor, nextWatch) }
        nextWatch = -1
    }

    /// Watches the file `path` names now for its first write.
    func watchNext(_ path: String) {
        guard descriptor >= 0 else { return }
        let added = inotify_add_watch(descriptor, path, UInt32(IN_MODIFY))
        if nextWatch >= 0, nextWatch != added, nextWatch != fileWatch { inotify_rm_watch(descriptor, nextWatch) }
        nextWatch = added
    }
}
