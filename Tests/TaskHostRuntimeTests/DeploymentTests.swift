import Foundation
import Synchronization
import TaskHostConfig
import TaskHostPlugins
import Testing
import Yams

@testable import TaskHostRuntime

/// What a deployed host relies on: the plugin search path, paths relative to the configuration,
/// the build's version.
@Suite struct DeploymentTests {
    @Test("The search path: command line, config, TASKHOST_PLUGIN_PATH, the binary's folder and ../lib/taskhost")
    func searchPath() {
        let path = PluginLoader.searchPath(
            extra: ["/cli", "/etc/taskhost/plugins"], environment: ["TASKHOST_PLUGIN_PATH": "/env/a::/env/b"],
            executableFolder: "/opt/taskhost/bin")
        #expect(
            path == [
                "/cli", "/etc/taskhost/plugins", "/env/a", "/env/b", "/opt/taskhost/bin", "/opt/taskhost/lib/taskhost",
            ])
        // Never the current folder's build output: a host started in a checkout loads nothing from it.
        let bare = PluginLoader.searchPath(environment: [:], executableFolder: "/usr/bin")
        #expect(bare == ["/usr/bin", "/usr/lib/taskhost"])
        #expect(!PluginLoader.searchPath(environment: [:]).contains { $0.hasPrefix(".build") })
    }

    @Test("Relative paths in a configuration are relative to its folder, not to the working folder")
    func pathsRelativeToTheConfiguration() throws {
        let yaml = """
            executors:
              echo: { plugin: Echo }
              byPath: { plugin: plugins/libEcho.so }
              bare: { plugin: libEcho.so }
              price: { library: lib/libpricing.so, function: pricing_reprice, signature: "int32(string, int64)" }
              system: { library: libm.so.6, function: cos, signature: "double(double)" }
            sources:
              orders: { kind: file, path: in/orders.jsonl, executor: echo }
              spool: { kind: directory, path: ./spool, executor: echo }
              absolute: { kind: file, path: /srv/in.jsonl, executor: echo }
            results: { path: out/results.jsonl }
            deadLetter: { path: "-" }
            pluginPath: [plugins, /opt/plugins]
            queue: { path: state/queue.db }
            """
        let config = try ConfigLoader.parse(yaml, file: "/etc/taskhost/orders.yaml", environment: [:])
        #expect(config.results == "/etc/taskhost/out/results.jsonl")
        #expect(config.deadLetter == "-")
        #expect(config.pluginPath == ["/etc/taskhost/plugins", "/opt/plugins"])
        #expect(config.queue?.path == "/etc/taskhost/state/queue.db")
        let inputs = config.sources.map { source -> String in
            switch source.input {
            case .file(let path, _), .directory(let path): path
            default: ""
            }
        }
        #expect(inputs == ["/etc/taskhost/in/orders.jsonl", "/etc/taskhost/spool", "/srv/in.jsonl"])
        let references = config.executors.map { executor -> String in
            switch executor.kind {
            case .plugin(let reference, _): reference
            case .function(let library, _, _, _): library
            }
        }
        #expect(
            references == [
                "Echo", "/etc/taskhost/plugins/libEcho.so", "/etc/taskhost/libEcho.so",
                "/etc/taskhost/lib/libpricing.so", "libm.so.6",
            ])
        // A file named without a folder: its paths stay as written (relative to where it is).
        let here = try ConfigLoader.parse(yaml, file: "orders.yaml", environment: [:])
        #expect(here.results == "out/results.jsonl")
        // A relative folder keeps relative paths short (and right from the same working folder).
        let relative = try ConfigLoader.parse(yaml, file: "examples/orders.yaml", environment: [:])
        #expect(relative.results == "examples/out/results.jsonl")
    }

    @Test("Every example's input files are found relative to its configuration, from any working folder")
    func examplesResolve() throws {
        let folder = Paths.packageRoot + "/examples"
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).filter {
            $0.hasSuffix(".yaml") && $0 != "alerts.yaml"
        }
        #expect(files.count >= 10)
        for file in files {
            let config = try ConfigLoader.load(path: folder + "/" + file, environment: [:])
            for source in config.sources {
                guard case .file(let path, _) = source.input else { continue }
                #expect(FileManager.default.fileExists(atPath: path), "\(file): \(source.name) reads \(path)")
            }
            #expect(config.results?.hasPrefix(Paths.packageRoot + "/examples/../out/") == true, "\(file)")
        }
    }

    @Test("A configuration run from another working folder reads and writes beside itself")
    func runFromAnotherFolder() async throws {
        let folder = Paths.scratch()
        try "{\"targetId\": \"a\", \"data\": 1}\n".write(
            toFile: folder + "/tasks.jsonl", atomically: true, encoding: .utf8)
        // The test process's working folder is not `folder`: the relative paths must not be read from there.
        #expect(FileManager.default.currentDirectoryPath != folder)
        let run = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo }
            sources:
              tasks: { kind: file, path: tasks.jsonl, executor: echo }
            results: { path: out/results.jsonl }
            queue: { path: state/queue.db }
            """, in: folder)
        #expect(run.exitCode == 0, "\(run)")
        #expect(try PipelineTests.records(folder + "/out/results.jsonl").count == 1)
        #expect(FileManager.default.fileExists(atPath: folder + "/state/queue.db"))
    }

    @Test("The commit comes from lib/taskhost/BUILD beside the installed binary; unknown without it")
    func buildInfo() throws {
        let prefix = Paths.scratch()
        try FileManager.default.createDirectory(atPath: prefix + "/lib/taskhost", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: prefix + "/bin", withIntermediateDirectories: true)
        #expect(BuildInfo.readCommit(executableFolder: prefix + "/bin") == "unknown")
        try "version=0.14.0\ncommit=0123abc-dirty\n".write(
            toFile: prefix + "/lib/taskhost/BUILD", atomically: true, encoding: .utf8)
        #expect(BuildInfo.readCommit(executableFolder: prefix + "/bin") == "0123abc-dirty")
        #expect(BuildInfo.current.text.hasPrefix("taskhost \(BuildInfo.version)\n"))
        #expect(BuildInfo.abi == "1.0")
    }

    @Test("taskhost --version prints the version, the commit, the plugin ABI and the Swift version")
    func versionCommand() async throws {
        let run = try await PipelineTests.taskhost(["--version"], in: Paths.scratch())
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.hasPrefix("taskhost 0.14.0\n"), "\(run.stdout)")
        #expect(run.stdout.contains("commit: "), "\(run.stdout)")
        #expect(run.stdout.contains("plugin ABI: 1.0"), "\(run.stdout)")
        #expect(run.stdout.contains("swift: "), "\(run.stdout)")
    }
}

/// The metrics operators alert on, scraped from a run's `/metrics`.
@Suite struct OperatorMetricsTests {
    /// The samples of a Prometheus text scrape, by series (`name{labels}`).
    static func samples(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            out[String(line[..<space])] = Double(line[line.index(after: space)...])
        }
        return out
    }

    @Test(
        "Task counters and durations by executor and source (never by target), build info, process metrics, the queue by state; alerts.yaml names only these"
    )
    func metricsOperatorsAlertOn() async throws {
        let folder = Paths.scratch()
        let port = HTTPSourceTests.freePort()
        try """
        {"targetId": "t1", "data": "one"}
        {"targetId": "t1", "data": "two"}
        {"targetId":
        {"targetId": "t2", "data": "bad"}
        {"targetId": "t2", "data": "after"}

        """.write(toFile: folder + "/a.jsonl", atomically: true, encoding: .utf8)
        try "{\"targetId\": \"t3\", \"data\": 3}\n".write(
            toFile: folder + "/b.jsonl", atomically: true, encoding: .utf8)
        final class Scrape: Sendable { let text = Mutex<String>("") }
        let scraped = Scrape()
        _ = try await runInProcess(
            """
            executors:
              echo: { plugin: Echo, config: { failOn: "\\"bad\\"" } }
              other: { plugin: Echo }
            sources:
              a: { kind: file, path: a.jsonl, follow: true, executor: echo }
              b: { kind: file, path: b.jsonl, follow: true, executor: other }
            onExhausted: park
            results: { path: results.jsonl }
            deadLetter: { path: dead.jsonl }
            metrics: { listen: "127.0.0.1:\(port)" }
            queue: { path: state/queue.db }
            """, in: folder
        ) { stop in
            defer { stop.request() }
            var text = ""
            for _ in 0..<400 {
                text = (try? await HTTPSourceTests.request("http://127.0.0.1:\(port)/metrics"))?.body ?? ""
                let now = Self.samples(text)
                if now[#"taskhost_queue_tasks{state="parked"}"#] == 2,
                    now[#"taskhost_queue_tasks{state="succeeded"}"#] == 3
                {
                    break
                }
                try await Task.sleep(for: .milliseconds(25))
            }
            scraped.text.withLock { $0 = text }
        }
        let text = scraped.text.withLock { $0 }
        let samples = Self.samples(text)
        #expect(samples[#"taskhost_tasks_total{outcome="succeeded",executor="echo",source="a"}"#] == 2, "\(text)")
        #expect(samples[#"taskhost_tasks_total{outcome="succeeded",executor="other",source="b"}"#] == 1)
        #expect(samples[#"taskhost_tasks_total{outcome="succeeded",executor="other",source="a"}"#] == 0)
        #expect(samples[#"taskhost_tasks_total{outcome="rejected",source="a"}"#] == 1)
        #expect(samples[#"taskhost_tasks_total{outcome="rejected",source="b"}"#] == 0)
        #expect(samples[#"taskhost_execution_seconds_count{executor="echo",source="a"}"#] == 3)
        #expect(samples[#"taskhost_queue_wait_seconds_count{executor="other",source="b"}"#] == 1)
        // Never a target as a label: their number has no bound.
        #expect(!text.contains("t1") && !text.contains("target="), "\(text)")
        // The queue by state: the parked target's two tasks wait behind it.
        #expect(samples[#"taskhost_queue_tasks{state="parked"}"#] == 2)
        #expect(samples[#"taskhost_queue_tasks{state="queued"}"#] == 0)
        #expect(samples[#"taskhost_queue_tasks{state="succeeded"}"#] == 3)
        #expect(samples[#"taskhost_queue_tasks{state="dead"}"#] == 1)  // the rejected line
        #expect((samples["taskhost_queue_oldest_queued_age_seconds"] ?? -1) >= 0)
        #expect(samples["taskhost_parked_targets"] == 1)
        let build = samples.first { $0.key.hasPrefix("taskhost_build_info{") }
        #expect(build?.value == 1)
        #expect(build?.key.contains(#"version="\#(BuildInfo.version)""#) == true)
        #expect(build?.key.contains(#"abi="1.0""#) == true)
        #expect((samples["process_cpu_seconds_total"] ?? 0) > 0)
        #expect((samples["process_resident_memory_bytes"] ?? 0) > 1_000_000)
        #expect((samples["process_open_fds"] ?? 0) > 2)
        let started = samples["process_start_time_seconds"] ?? 0
        #expect(abs(started - Date().timeIntervalSince1970) < 24 * 3600, "start time \(started)")
        #expect(text.contains("# TYPE process_cpu_seconds_total counter"))

        // Every metric the sample alerts use is served.
        let alerts = try String(contentsOfFile: Paths.packageRoot + "/examples/alerts.yaml", encoding: .utf8)
        let names = try Self.metricNames(inAlerts: alerts)
        #expect(names.count >= 5, "\(names)")
        let served = Set(samples.keys.map { String($0.prefix { $0 != "{" }) })
        for name in names {
            #expect(served.contains(name), "examples/alerts.yaml uses \(name), which /metrics does not serve")
        }
    }

    /// The metric names in the alerting rules' expressions; throws when the file is not valid
    /// YAML in Prometheus's rule-file shape.
    static func metricNames(inAlerts text: String) throws -> Set<String> {
        struct Shape: Error { var what: String }
        guard let root = try Yams.load(yaml: text) as? [String: Any], let groups = root["groups"] as? [[String: Any]]
        else { throw Shape(what: "no groups") }
        var names = Set<String>()
        for group in groups {
            guard let rules = group["rules"] as? [[String: Any]] else { throw Shape(what: "a group without rules") }
            for rule in rules {
                guard rule["alert"] is String, let expr = rule["expr"] as? String else {
                    throw Shape(what: "a rule without alert or expr: \(rule)")
                }
                for match in expr.matches(of: /\b(taskhost|process)_[a-z_]+\b/) { names.insert(String(match.output.0)) }
            }
        }
        return names
    }
}
