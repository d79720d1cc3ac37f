import TaskHostScheduler
import TaskHostStore
import Testing

/// The durable store's feed by target, driven against a queue in memory: every row handed once,
/// each target's rows in order, at most a window of one target in the scheduler, and a backlog on
/// one target never keeping another target's rows out.
@Suite struct TargetFeedTests {
    typealias Row = StoredTask

    /// A queued row with only what the feed reads.
    static func row(_ row: Int64, _ target: TargetID) -> Row {
        StoredTask(
            row: row, source: "s", seq: UInt64(row), taskId: nil, target: target, executor: "x", priority: 0,
            payload: "{}", raw: "{}", batch: nil, attempts: 0, notBefore: 0, crashes: 0)
    }

    /// A queue, the feed over it, and a scheduler that holds what it was handed until told.
    struct Harness {
        var queue: [Row]
        var feed: TargetFeed
        var final: Set<Int64> = []
        var handed: [Row] = []
        var inScheduler: [Row] = []
        var readSize = 512
        var queries = 0

        init(_ targets: [TargetID], window: Int) {
            queue = targets.enumerated().map { TargetFeedTests.row(Int64($0 + 1), $1) }
            feed = TargetFeed(window: window)
        }

        /// Runs the feed until it hands a row (returned) or has nothing to hand (nil).
        mutating func next() -> Row? {
            while true {
                switch feed.next() {
                case .row(let row):
                    handed.append(row)
                    inScheduler.append(row)
                    return row
                case .refill(let target, let from, let through, let limit):
                    queries += 1
                    let rows = queue.filter {
                        $0.target == target && $0.row >= from && $0.row <= through && !final.contains($0.row)
                    }
                    feed.refilled(target, rows: Array(rows.prefix(limit)), limit: limit)
                case .read(let after):
                    queries += 1
                    let rows = queue.filter { $0.row > after && !final.contains($0.row) }.prefix(readSize)
                    if rows.isEmpty { return nil }
                    feed.read(Array(rows))
                }
            }
        }

        /// The scheduler finishes the oldest task it holds of `target`.
        mutating func finish(_ target: TargetID) {
            guard let index = inScheduler.firstIndex(where: { $0.target == target }) else { return }
            let row = inScheduler.remove(at: index)
            final.insert(row.row)
            feed.finished(target)
        }

        func checkOrderAndWindow() {
            var last: [TargetID: Int64] = [:]
            for row in handed {
                #expect(row.row > last[row.target, default: 0], "rows of \(row.target) out of order")
                last[row.target] = row.row
            }
            #expect(Set(handed.map(\.row)).count == handed.count, "a row handed twice")
            for (target, count) in Dictionary(grouping: inScheduler, by: \.target).mapValues(\.count) {
                #expect(count <= feed.window, "\(target) holds \(count) rows, over the window")
            }
        }
    }

    @Test("A backlog of 2,000 rows on one target: the other target's rows are handed after at most a window of it")
    func backlogDoesNotBlock() {
        var harness = Harness(Array(repeating: "A", count: 2000) + Array(repeating: "B", count: 5), window: 25)
        harness.readSize = 100
        var firstRows: [Row] = []
        while let row = harness.next() { firstRows.append(row) }
        // Nothing of A finished yet: 25 of A, then B's 5, and A's other rows stay in the queue.
        #expect(firstRows.filter { $0.target == "A" }.count == 25)
        #expect(firstRows.filter { $0.target == "B" }.map(\.row) == [2001, 2002, 2003, 2004, 2005])
        #expect(harness.feed.isHoldingBack)
        harness.checkOrderAndWindow()
    }

    @Test("Random arrivals and completions: every row handed once, in order per target, within the window")
    func randomized() {
        var generator = SplitMix(seed: 42)
        for round in 0..<30 {
            let targets: [TargetID] = (0..<400).map { _ in
                let u = generator.next() % 10
                return u < 7 ? .string("hot\(generator.next() % 2)") : .integer(Int64(generator.next() % 30))
            }
            let window = 1 + Int(generator.next() % 8)
            var harness = Harness(targets, window: window)
            harness.readSize = 1 + Int(generator.next() % 64)
            var parkedOnce = false
            while harness.final.count < targets.count {
                if let _ = harness.next() {
                    // Sometimes hand more before finishing anything.
                    if generator.next() % 3 != 0 { continue }
                }
                if !parkedOnce, round % 4 == 0, harness.handed.count > 100 {
                    harness.feed.park("hot0")
                    parkedOnce = true
                }
                if parkedOnce, generator.next() % 50 == 0 { harness.feed.release("hot0") }
                let candidates = harness.inScheduler.filter { !harness.feed.parked.contains($0.target) }
                guard !candidates.isEmpty else {
                    if harness.feed.parked.contains("hot0") {
                        harness.feed.release("hot0")
                        continue
                    }
                    Issue.record("round \(round): stuck with \(harness.final.count) of \(targets.count) final")
                    return
                }
                let pick = candidates[Int(generator.next() % UInt64(candidates.count))]
                harness.finish(pick.target)
                harness.checkOrderAndWindow()
            }
            #expect(harness.handed.count == targets.count, "round \(round)")
            // The last refill may still be due, to find that nothing is left.
            #expect(harness.next() == nil)
            #expect(!harness.feed.isHoldingBack)
            harness.checkOrderAndWindow()
        }
    }

    @Test("A parked target gets no rows; its release refills it from the first row left behind")
    func parkAndRelease() {
        var harness = Harness(["A", "A", "B", "A", "A"], window: 1)
        harness.feed.park("A")
        #expect(harness.next().map { "\($0.row)\($0.target)" } == "3\(TargetID.string("B"))")
        #expect(harness.next() == nil)
        #expect(!harness.feed.isHoldingBack)  // parked rows wait for a release
        let refillDue = harness.feed.release("A")
        #expect(refillDue)
        #expect(harness.next().map { "\($0.row)\($0.target)" } == "1\(TargetID.string("A"))")
        #expect(harness.next() == nil)
        harness.finish("A")
        #expect(harness.next().map { "\($0.row)\($0.target)" } == "2\(TargetID.string("A"))")
        harness.finish("A")
        #expect(harness.next().map { "\($0.row)\($0.target)" } == "4\(TargetID.string("A"))")
        harness.finish("A")
        #expect(harness.next().map { "\($0.row)\($0.target)" } == "5\(TargetID.string("A"))")
        harness.checkOrderAndWindow()
    }

    @Test("A drained target's rows through the drain are never handed; its later rows are")
    func drain() {
        var harness = Harness(["A", "A", "A"], window: 1)
        harness.readSize = 1
        #expect(harness.next().map { "\($0.row)\($0.target)" } == "1\(TargetID.string("A"))")
        #expect(harness.next() == nil)
        // The operator drains A through row 2 (rows 1 and 2 become dead letters).
        harness.final.formUnion([1, 2])
        harness.inScheduler.removeAll()
        harness.feed.drained("A", through: 2)
        #expect(harness.next().map { "\($0.row)\($0.target)" } == "3\(TargetID.string("A"))")
    }
}

/// SCENARIOS.md's splitmix64, for reproducible rounds.
struct SplitMix {
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
