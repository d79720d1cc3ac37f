import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The durable queue's tasks by state, for `/metrics` and `/status`.
struct QueueDepth: Sendable {
    /// `queued` (waiting, targets not parked), `parked` (waiting behind a parked target),
    /// `running`, `succeeded` (kept for `retainFinishedMs`) and `dead`.
    var byState: [String: Int]
    /// Seconds since the oldest waiting task was enqueued; nil when none waits.
    var oldestQueuedAge: Double?

    /// Tasks waiting to start: queued and parked.
    var waiting: Int { (byState["queued"] ?? 0) + (byState["parked"] ?? 0) }
}

/// The process's own metrics, with the names every Prometheus client library uses
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), read from `/proc/self` at
/// each scrape.
struct ProcessMetrics: Sendable {
    var cpuSeconds: Double
    var residentBytes: Int
    var virtualBytes: Int
    var startTimeSeconds: Double
    var openFiles: Int
    var maxFiles: Int?

    /// Now, from `/proc/self/stat`, `/proc/stat` (the boot time) and `/proc/self/fd`; nil where
    /// the system does not say (no `/proc`).
    static func read() -> ProcessMetrics? {
        guard let stat = procFile("/proc/self/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        // The fields after the command's name (which may hold spaces), from field 3 (the state).
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        func field(_ number: Int) -> Double { fields.count > number - 3 ? Double(fields[number - 3]) ?? 0 : 0 }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let page = sysconf(Int32(_SC_PAGESIZE))
        var boot = 0.0
        if let system = procFile("/proc/stat"),
            let line = system.split(separator: "\n").first(where: { $0.hasPrefix("btime ") })
        {
            boot = Double(line.dropFirst("btime ".count)) ?? 0
        }
        var limit = rlimit()
        let maxFiles = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Int(limit.rlim_cur) : nil
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        return ProcessMetrics(
            cpuSeconds: (field(14) + field(15)) / ticks, residentBytes: Int(field(24)) * page,
            virtualBytes: Int(field(23)), startTimeSeconds: boot + field(22) / ticks, openFiles: open,
            maxFiles: maxFiles)
    }

    /// The Prometheus text of these metrics.
    var text: String {
        func metric(_ name: String, _ type: String, _ help: String, _ value: String) -> String {
            "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        var out = metric(
            "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
            String(cpuSeconds))
        out += metric(
            "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", String(residentBytes))
        out += metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", String(virtualBytes))
        out += metric(
            "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
            String(startTimeSeconds))
        out += metric("process_open_fds", "gauge", "Number of open file descriptors.", String(openFiles))
        if let maxFiles {
            out += metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", String(maxFiles))
        }
        return out
    }
}

extension ProcessMetrics? {
    /// Nothing when the system has no `/proc`.
    var text: String { self?.text ?? "" }
}

/// A file of `/proc`, read to its end (its size says 0).
private func procFile(_ path: String) -> String? {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
        if count <= 0 { break }
        bytes += buffer[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}
