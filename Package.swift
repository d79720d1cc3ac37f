// swift-tools-version: 6.1
import PackageDescription

/// Code generation for the host's own targets (JSON, plugins, store, configuration, sources, the
/// runtime and the benchmark; measured: without it the plugin path ran at half speed): cross-module
/// optimization, and copies of records emitted inline (without `-disable-type-layout` and
/// `-disable-llvm-merge-functions-pass` the specialized copies of a task record call the generic
/// value witnesses). SwiftPM refuses `unsafeFlags` in a product that another package depends on
/// by version, so no target of a library product carries them: the scheduler's hot path is
/// `@inlinable` instead, and is specialized in the modules that import it.
let hostFlags: [SwiftSetting] = [
    .unsafeFlags([
        "-cross-module-optimization", "-Xfrontend", "-disable-llvm-merge-functions-pass", "-Xfrontend",
        "-disable-type-layout",
    ])
]

let package = Package(
    name: "TaskHost",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "TaskHostScheduler", targets: ["TaskHostScheduler"]),
        .library(name: "TaskHostPluginSDK", targets: ["TaskHostPluginSDK"]),
        .executable(name: "taskhost", targets: ["TaskHostCLI"]),
        .executable(name: "taskhost-bench", targets: ["TaskHostBench"]),
        .executable(name: "taskhost-example", targets: ["TaskHostExample"]),
        // Example plugins: each its own shared library, loaded with dlopen.
        .library(name: "TargetFile", type: .dynamic, targets: ["TargetFile"]),
        .library(name: "Command", type: .dynamic, targets: ["Command"]),
        .library(name: "Echo", type: .dynamic, targets: ["Echo"]),
        .library(name: "Noop", type: .dynamic, targets: ["Noop"]),
        .library(name: "HTTPRequest", type: .dynamic, targets: ["HTTPRequest"]),
        // A plain C library that knows nothing of TaskHost, called through libffi.
        .library(name: "pricing", type: .dynamic, targets: ["Pricing"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-async-algorithms.git", from: "1.1.4"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // The plugin ABI: one C header, usable as-is by C, C++, Rust or Zig authors.
        .target(name: "CTaskHostPlugin"),
        // The scheduler: pure Swift, no I/O, no dlopen. Usable on its own as a library.
        .target(
            name: "TaskHostScheduler",
            dependencies: [
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ]
        ),
        // The Swift plugin SDK: depends on the header only, so plugins stay small.
        .target(name: "TaskHostPluginSDK", dependencies: ["CTaskHostPlugin"]),
        .systemLibrary(
            name: "CTaskHostFFI", path: "Sources/CTaskHostFFI", pkgConfig: "libffi",
            providers: [.apt(["libffi-dev"])]),
        // SQLite, for the embedded durable queue (Debian: libsqlite3-dev).
        .systemLibrary(
            name: "CSQLite", path: "Sources/CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // Small C helpers of the host (dlopen error text, dladdr) with _GNU_SOURCE.
        .target(name: "CTaskHostSystem"),
        // TaskHost's one JSON codec: a strict parser, values, paths and a writer for result lines.
        .target(name: "TaskHostJSON", swiftSettings: hostFlags),
        // The plugin host: the loader (dlopen), plugin instances and their executor, libffi
        // functions, the conformance check. Knows nothing of pipelines, sources or the store.
        .target(
            name: "TaskHostPlugins",
            dependencies: [
                "TaskHostScheduler", "TaskHostJSON", "CTaskHostPlugin", "CTaskHostFFI", "CTaskHostSystem",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hostFlags
        ),
        // The store: the embedded durable queue (SQLite) and its journal of running attempts.
        .target(
            name: "TaskHostStore",
            dependencies: [
                "TaskHostScheduler", "CSQLite", "CTaskHostSystem",
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: hostFlags
        ),
        // The shared queue on PostgreSQL (many hosts on one database): schema, migrations and the
        // fenced statements. Host-side only: the scheduler and the plugin SDK never link it.
        .target(
            name: "TaskHostPostgres",
            dependencies: [
                .product(name: "PostgresNIO", package: "postgres-nio"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hostFlags
        ),
        // The configuration: a pipeline file read into typed values, every error at its file:line:column.
        .target(
            name: "TaskHostConfig",
            dependencies: [
                "TaskHostScheduler", "TaskHostJSON", "TaskHostStore", .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: hostFlags
        ),
        // The sources: one type per kind behind one protocol (TaskSource); only the HTTP source runs a server.
        .target(
            name: "TaskHostSources",
            dependencies: [
                "TaskHostConfig", "TaskHostStore", "TaskHostJSON", .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: hostFlags
        ),
        // The application (a target, not a product): wires sources, the store, the scheduler, the plugins and the sinks into a pipeline.
        .target(
            name: "TaskHostRuntime",
            dependencies: [
                "TaskHostScheduler", "TaskHostJSON", "TaskHostPlugins", "TaskHostStore", "TaskHostConfig",
                "TaskHostSources", "TaskHostPostgres", "CTaskHostPlugin", "CTaskHostSystem",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: hostFlags
        ),
        .executableTarget(
            name: "TaskHostCLI",
            dependencies: [
                "TaskHostRuntime", "TaskHostPlugins", "TaskHostConfig", "TaskHostStore", "TaskHostJSON",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "TaskHostBench",
            dependencies: [
                "TaskHostScheduler", "TaskHostRuntime", "TaskHostPlugins",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: hostFlags
        ),
        .executableTarget(
            name: "TaskHostExample",
            dependencies: ["TaskHostScheduler"],
            path: "examples/library-basics"
        ),
        .target(
            name: "TargetFile", dependencies: ["CTaskHostPlugin"], path: "Plugins/TargetFile", publicHeadersPath: "."),
        .target(name: "Command", dependencies: ["CTaskHostPlugin"], path: "Plugins/Command", publicHeadersPath: "."),
        .target(name: "Echo", dependencies: ["TaskHostPluginSDK"], path: "Plugins/Echo"),
        .target(name: "HTTPRequest", dependencies: ["TaskHostPluginSDK"], path: "Plugins/HTTPRequest"),
        .target(name: "Noop", dependencies: ["CTaskHostPlugin"], path: "Plugins/Noop", publicHeadersPath: "."),
        .target(name: "Pricing", path: "Plugins/Pricing"),
        .testTarget(
            name: "TaskHostSchedulerTests",
            dependencies: ["TaskHostScheduler"]
        ),
        // Loads the real plugins built from Plugins/ (never links them) and fixtures it compiles.
        .testTarget(
            name: "TaskHostRuntimeTests",
            dependencies: [
                "TaskHostRuntime", "TaskHostScheduler", "TaskHostJSON", "TaskHostPlugins", "TaskHostConfig",
                "TaskHostStore", "TaskHostSources", .product(name: "Logging", package: "swift-log"),
                // examples/alerts.yaml is read as YAML.
                .product(name: "Yams", package: "Yams"),
            ],
            exclude: ["Fixtures"]
        ),
        // Runs against a real PostgreSQL: `scripts/test.sh` starts a throwaway cluster for it.
        .testTarget(
            name: "TaskHostPostgresTests",
            dependencies: [
                "TaskHostPostgres", .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
