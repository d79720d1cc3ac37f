import Foundation
import TaskHostSources
import Testing

@testable import TaskHostRuntime

#if canImport(Glibc)
    import Glibc
#endif

/// A followed file source across log rotation, as logrotate does it: create mode (`mv` and a new
/// file) and copytruncate (truncated in place), with the durable queue stopped and restarted in
/// the middle of a rotation. In-process runs; each test waits for the results it expects with a
/// bounded deadline.
@Suite struct FileRotationTests {
    typealias P = PipelineTests

    static func line(_ id: String, padding: Int = 0) -> String {
        #"{"targetId": "a", "id": "\#(id)", "data": "\#(String(repeating: "x", count: padding))"}"# + "\n"
    }

    static func config(_ folder: String) -> String {
        """
        executors:
          echo: { plugin: Echo }
        sources:
          tasks: { kind: file, path: \(folder)/in.jsonl, follow: true, executor: echo }
        results: { path: \(folder)/results.jsonl }
        shutdown: { gracePeriodMs: 0 }
        """
    }

    /// Appends to an existing file, as a writer holding it open would.
    static func append(_ text: String, to path: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(text.utf8))
        try handle.close()
    }

    /// Creates a new file under `path` in place (not written aside and renamed), as logrotate's
    /// create mode does.
    static func create(_ text: String, at path: String) throws {
        let descriptor = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o644)
        try #require(descriptor >= 0, "cannot create \(path)")
        let bytes = Array(text.utf8)
        #expect(write(descriptor, bytes, bytes.count) == bytes.count)
        close(descriptor)
    }

    /// The ids in the results file so far.
    static func ids(_ folder: String) -> [String] {
        ((try? P.records(folder + "/results.jsonl")) ?? []).compactMap { $0["id"] as? String }
    }

    /// Waits until the results hold `count` tasks (at most 20 s).
    static func waitFor(_ count: Int, in folder: String) async throws {
        for _ in 0..<4000 where ids(folder).count < count { try await Task.sleep(for: .milliseconds(5)) }
        try #require(ids(folder).count >= count, "expected \(count) results, have \(ids(folder))")
    }

    @Test("Create mode: lines before and after mv + a new file each run once, with what the old file got after the mv")
    func createMode() async throws {
        let folder = Paths.scratch()
        let path = folder + "/in.jsonl"
        try Self.create(Self.line("t1") + Self.line("t2"), at: path)
        let run = try await runInProcess(Self.config(folder), in: folder) { stop in
            try await Self.waitFor(2, in: folder)
            #expect(rename(path, path + ".1") == 0)
            // The writer has not reopened yet: it still appends to the old file.
            try Self.append(Self.line("t3"), to: path + ".1")
            try await Self.waitFor(3, in: folder)
            // The new file appears empty; the old one gets a last line before the writer reopens.
            try Self.create("", at: path)
            try Self.append(Self.line("t4"), to: path + ".1")
            try Self.append(Self.line("t5") + Self.line("t6"), to: path)
            try await Self.waitFor(6, in: folder)
            try Self.append(Self.line("t7"), to: path)
            try await Self.waitFor(7, in: folder)
            stop.request()
        }
        #expect(run.exitCode == 0, "\(run)")
        #expect(Self.ids(folder).sorted() == (1...7).map { "t\($0)" }, "\(run)")
    }

    @Test("Copytruncate: the first line written after the file was truncated in place is run")
    func copytruncate() async throws {
        let folder = Paths.scratch()
        let path = folder + "/in.jsonl"
        try Self.create(Self.line("t1", padding: 200) + Self.line("t2", padding: 200), at: path)
        let run = try await runInProcess(Self.config(folder), in: folder) { stop in
            try await Self.waitFor(2, in: folder)
            try FileManager.default.copyItem(atPath: path, toPath: path + ".1")
            #expect(truncate(path, 0) == 0)
            try Self.append(Self.line("t3"), to: path)
            try await Self.waitFor(3, in: folder)
            try Self.append(Self.line("t4"), to: path)
            try await Self.waitFor(4, in: folder)
            stop.request()
        }
        #expect(run.exitCode == 0, "\(run)")
        #expect(Self.ids(folder).sorted() == ["t1", "t2", "t3", "t4"], "\(run)")
    }

    @Test("Durable queue: stopped between the mv and the new file, restarted: every line runs once")
    func restartDuringRotation() async throws {
        let folder = Paths.scratch()
        let path = folder + "/in.jsonl"
        try Self.create(Self.line("t1") + Self.line("t2"), at: path)
        let first = try await runInProcess(Self.config(folder), in: folder) { stop in
            try await Self.waitFor(2, in: folder)
            #expect(rename(path, path + ".1") == 0)
            try Self.append(Self.line("t3"), to: path + ".1")
            try await Self.waitFor(3, in: folder)
            stop.request()
        }
        #expect(first.exitCode == 0, "\(first)")
        // While no host runs, the writer appends to the rotated file; the path names no file.
        try Self.append(Self.line("t4"), to: path + ".1")
        let second = try await runInProcess(Self.config(folder), in: folder) { stop in
            // The rest of the rotated file, then the new file from its start.
            try await Self.waitFor(4, in: folder)
            try Self.create(Self.line("t5") + Self.line("t6"), at: path)
            try await Self.waitFor(6, in: folder)
            stop.request()
        }
        #expect(second.exitCode == 0, "\(second)")
        // A third run resumes the new file after its last committed line.
        try Self.append(Self.line("t7"), to: path)
        let third = try await runInProcess(Self.config(folder), in: folder) { stop in
            try await Self.waitFor(7, in: folder)
            stop.request()
        }
        #expect(third.exitCode == 0, "\(third)")
        #expect(Self.ids(folder).sorted() == (1...7).map { "t\($0)" }, "\(first)\n\(second)\n\(third)")
    }

    @Test("A rotated file is found beside the path by its device and inode, under logrotate's names")
    func rotatedFileLookup() throws {
        let folder = Paths.scratch()
        let path = folder + "/in.jsonl"
        for name in ["in.jsonl.1", "in-20261207.jsonl", "other.jsonl"] {
            try Self.create("", at: folder + "/" + name)
            var info = stat()
            #expect(stat(folder + "/" + name, &info) == 0)
            let found = rotatedFile(of: path, device: Int64(info.st_dev), inode: Int64(info.st_ino))
            #expect(found?.path == (name == "other.jsonl" ? nil : folder + "/" + name), "\(name)")
        }
    }
}
