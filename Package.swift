// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "TaskHost",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "TaskHostScheduler", targets: ["TaskHostScheduler"]),
        .executable(name: "taskhost-bench", targets: ["TaskHostBench"]),
        .executable(name: "taskhost-example", targets: ["TaskHostExample"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // The scheduler: pure Swift, no I/O, no dlopen. Usable on its own as a library.
        .target(
            name: "TaskHostScheduler",
            dependencies: [
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: [.unsafeFlags(["-cross-module-optimization"])]
        ),
        .executableTarget(
            name: "TaskHostBench",
            dependencies: [
                "TaskHostScheduler",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "TaskHostExample",
            dependencies: ["TaskHostScheduler"],
            path: "examples/library-basics"
        ),
        .testTarget(
            name: "TaskHostSchedulerTests",
            dependencies: ["TaskHostScheduler"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
