import TaskHostPlugins
import TaskHostScheduler

/// splitmix64, exactly as `SCENARIOS.md` defines it.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum ExecutorKind: String { case noop, sleep, yield }

/// One scenario of `SCENARIOS.md`, generated ahead of the timed part.
struct Scenario {
    var key: String
    var name: String
    var maxThreads: Int?
    var kind: ExecutorKind
    var targets: [Int32]
    var targetCount: Int
    var durations: [Int32] = []
    var yields: [Int32] = []

    static let keys = ["S1", "S2", "S3", "S4", "V1"]

    static func make(_ key: String, tasks override: Int?) -> Scenario? {
        switch key {
        case "S1":
            let n = override ?? 1_000_000
            return Scenario(
                key: key, name: "S1-noop", maxThreads: 64, kind: .noop, targets: (0..<n).map { Int32($0 % 1000) },
                targetCount: 1000)
        case "S2":
            let n = override ?? 200_000
            var rng = SplitMix64(seed: 2)
            var targets = [Int32]()
            targets.reserveCapacity(n)
            for _ in 0..<n {
                let u = rng.next()
                targets.append(u % 10 < 8 ? Int32(rng.next() % 10) : Int32(10 + rng.next() % 10_000))
            }
            return Scenario(
                key: key, name: "S2-skew", maxThreads: 64, kind: .noop, targets: targets, targetCount: 10_010)
        case "S3":
            let n = override ?? 5000
            var rng = SplitMix64(seed: 3)
            var durations = [Int32]()
            for _ in 0..<n { durations.append(Int32(1 + rng.next() % 5)) }
            return Scenario(
                key: key, name: "S3-sleep", maxThreads: 32, kind: .sleep, targets: (0..<n).map { Int32($0 % 100) },
                targetCount: 100, durations: durations)
        case "S4":
            let n = override ?? 100_000
            return Scenario(
                key: key, name: "S4-unbounded", maxThreads: nil, kind: .noop, targets: (0..<n).map { Int32($0) },
                targetCount: n)
        case "V1":
            let n = override ?? 20_000
            var rng = SplitMix64(seed: 4)
            var targets = [Int32]()
            var yields = [Int32]()
            for _ in 0..<n {
                targets.append(Int32(rng.next() % 50))
                yields.append(Int32(rng.next() % 3))
            }
            return Scenario(
                key: key, name: "V1-yield", maxThreads: 8, kind: .yield, targets: targets, targetCount: 50,
                yields: yields)
        default:
            return nil
        }
    }

    /// `ideal_ms` of SCENARIOS.md (S3 only).
    var idealMilliseconds: Double? {
        guard kind == .sleep else { return nil }
        var perTarget = [Double](repeating: 0, count: targetCount)
        var sum = 0.0
        for (i, t) in targets.enumerated() {
            sum += Double(durations[i])
            perTarget[Int(t)] += Double(durations[i])
        }
        return max(sum / Double(maxThreads ?? 1), perTarget.max() ?? 0)
    }

    /// The check values of SCENARIOS.md: sum of T and sum((i+1)*T[i]) mod 2^61-1.
    var checkValues: (sum: Int64, weighted: UInt64) {
        let modulus: UInt64 = (1 << 61) - 1
        var sum: Int64 = 0
        var weighted: UInt64 = 0
        for (i, t) in targets.enumerated() {
            sum += Int64(t)
            let product = UInt64(i + 1).multipliedFullWidth(by: UInt64(t))
            let term = modulus.dividingFullWidth((product.high, product.low)).remainder
            weighted = (weighted + term) % modulus
        }
        return (sum, weighted)
    }
}

/// A pre-generated array delivered one task at a time, like the peers' async generators.
struct ArrayTaskSequence<Payload: Sendable>: AsyncSequence, Sendable {
    typealias Element = TaskItem<Payload>
    let tasks: [TaskItem<Payload>]

    struct AsyncIterator: AsyncIteratorProtocol {
        let tasks: [TaskItem<Payload>]
        var index = 0
        mutating func next() async -> TaskItem<Payload>? { take() }

        /// What `for await` and the scheduler's intake call; without it the standard library's
        /// generic default forwards to `next()`.
        mutating func next(isolation actor: isolated (any Actor)?) async -> TaskItem<Payload>? { take() }

        @inline(__always)
        private mutating func take() -> TaskItem<Payload>? {
            guard index < tasks.count else { return nil }
            defer { index += 1 }
            return tasks[index]
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(tasks: tasks) }
}

/// Tasks made one at a time as they are pulled: task i has target i % targets. Nothing is
/// materialized, so memory shows what the scheduler itself holds.
struct LazyTaskSequence: AsyncSequence, Sendable {
    typealias Element = TaskItem<Int>
    let count: Int
    let targets: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        let count: Int
        let targets: Int
        var index = 0
        mutating func next() async -> TaskItem<Int>? {
            guard index < count else { return nil }
            defer { index += 1 }
            return TaskItem(targetId: .integer(Int64(index % targets)), payload: index)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(count: count, targets: targets) }
}
