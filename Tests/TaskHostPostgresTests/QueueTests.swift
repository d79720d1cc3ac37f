import Foundation
import PostgresNIO
import Testing

@testable import TaskHostPostgres

@Suite struct PostgresQueueTests {
    @Test func eachTargetRunsItsTasksInOrderOneAtATime() async throws {
        try await withQueue { queue in
            let seqs = try await queue.enqueue([
                task("a", "a1"), task("b", "b1"), task("a", "a2"), task("a", "a3"), task("b", "b2"),
            ])
            #expect(seqs == [1, 1, 2, 3, 2])
            let host = try await queue.register(name: "h1", pid: 1, maxConcurrency: 8)
            // One head per target, however many tasks it has.
            let first = try #require(try await queue.claim(host: host, limit: 10))
            #expect(first.map(\.taskId).sorted() == ["a1", "b1"])
            #expect(first.allSatisfy { $0.attempt == 1 && $0.fence == 1 })
            // A running target is never claimed again.
            #expect(try await queue.claim(host: host, limit: 10) == [])
            let a1 = try #require(first.first { $0.targetId == "a" })
            let b1 = try #require(first.first { $0.targetId == "b" })
            #expect(try await queue.finish([PostgresFinish(a1, .succeeded)]).applied.count == 1)
            let second = try #require(try await queue.claim(host: host, limit: 10))
            #expect(second.map(\.taskId) == ["a2"])
            #expect(second[0].fence == 2)
            #expect(second[0].payload == "{\"id\":\"a2\",\"target\":\"a\"}")
            // A retry holds the head: b2 waits behind b1's next attempt.
            let retried = try await queue.finish([PostgresFinish(b1, .retry(after: .zero, error: "flaky"))])
            #expect(retried.applied.count == 1)
            let third = try #require(try await queue.claim(host: host, limit: 10))
            #expect(third.map(\.taskId) == ["b1"])
            #expect(third[0].attempt == 2)
            // A backoff on the database's clock: not ready until it passes.
            _ = try await queue.finish([PostgresFinish(third[0], .retry(after: .seconds(3600), error: "later"))])
            #expect(try await queue.claim(host: host, limit: 10) == [])
            #expect(try await target(queue, "b")?.state == "ready")
            #expect(try await count(queue, "SELECT count(*) FROM th_task WHERE last_error = 'later'") == 1)
            // A dead letter moves the target on; a park stops it on its head.
            _ = try await queue.finish([PostgresFinish(second[0], .deadLetter(error: "broken"))])
            let a3 = try #require(try await queue.claim(host: host, limit: 10)?.first)
            #expect(a3.taskId == "a3")
            #expect(a3.attempt == 1)
            #expect(try await count(queue, "SELECT count(*) FROM th_dead WHERE task_id = 'a2' AND attempts = 1") == 1)
            _ = try await queue.finish([PostgresFinish(a3, .park(error: "stop"))])
            #expect(try await target(queue, "a")?.state == "parked")
            _ = try await queue.enqueue([task("a", "a4")])
            #expect(try await queue.claim(host: host, limit: 10) == [])
            #expect(try await target(queue, "a")?.tailSeq == 4)
        }
    }

    @Test func anEmptiedTargetGoesIdleAndWakesOnTheNextEnqueue() async throws {
        try await withQueue { queue in
            _ = try await queue.enqueue([task("t", "1")])
            let host = try await queue.register(name: "h", pid: 1, maxConcurrency: 1)
            let claim = try #require(try await queue.claim(host: host, limit: 1)?.first)
            _ = try await queue.finish([PostgresFinish(claim, .succeeded)])
            #expect(
                try await target(queue, "t")
                    == TargetRow(state: "idle", headSeq: nil, tailSeq: 1, headAttempt: 0, fence: 1, owner: nil))
            #expect(try await queue.enqueue([task("t", "2")]) == [2])
            let next = try #require(try await queue.claim(host: host, limit: 1)?.first)
            #expect(next.taskId == "2")
            #expect(next.seq == 2)
            #expect(next.fence == 2)
        }
    }

    @Test func aFreeTargetIsNotHeldUpByABusyTargetsBacklog() async throws {
        try await withQueue { queue in
            _ = try await queue.enqueue((1...200).map { task("hot", "h\($0)") })
            _ = try await queue.enqueue([task("cold", "c1")])
            let host = try await queue.register(name: "h", pid: 1, maxConcurrency: 2)
            let claims = try #require(try await queue.claim(host: host, limit: 2))
            #expect(Set(claims.map(\.taskId)) == ["h1", "c1"])
        }
    }

    @Test func twoClaimersNeverTakeOneTargetTheSecondSkipsWhatTheFirstHolds() async throws {
        try await withQueue { queue in
            _ = try await queue.enqueue([task("x", "x1"), task("y", "y1")])
            let h1 = try await queue.register(name: "h1", pid: 1, maxConcurrency: 1)
            let h2 = try await queue.register(name: "h2", pid: 2, maxConcurrency: 1)
            try await withConnections(queue) { a, b in
                // Interleaving 1: A holds its claim's locks (not committed); B skips A's target.
                try await begin(a)
                let first = try #require(
                    try await PostgresQueue.Statements.claim(host: h1, limit: 1, on: a, logger: testLogger))
                try await begin(b)
                let second = try #require(
                    try await PostgresQueue.Statements.claim(host: h2, limit: 1, on: b, logger: testLogger))
                #expect(first.count == 1)
                #expect(second.count == 1)
                #expect(first[0].targetId != second[0].targetId)
                // B asks for more while A still holds its target: there is nothing else to take.
                #expect(
                    try await PostgresQueue.Statements.claim(host: h2, limit: 5, on: b, logger: testLogger) == [])
                try await commit(b)
                try await commit(a)
            }
            // Interleaving 2: A has committed; B sees the target running and takes nothing.
            #expect(try await queue.claim(host: h2, limit: 5) == [])
            #expect(try await count(queue, "SELECT count(*) FROM th_target WHERE state = 'running'") == 2)
            #expect(try await count(queue, "SELECT count(DISTINCT owner_host) FROM th_target") == 2)
        }
    }

    @Test func aStaleFenceIsRefusedAndChangesNothing() async throws {
        try await withQueue { queue in
            _ = try await queue.enqueue([task("t", "1"), task("t", "2")])
            let host = try await queue.register(name: "h", pid: 1, maxConcurrency: 1)
            let claim = try #require(try await queue.claim(host: host, limit: 1)?.first)
            let before = try await target(queue, "t")
            for stale in [
                PostgresFinish(
                    targetId: "t", seq: claim.seq, fence: claim.fence - 1, attempt: 1, outcome: .succeeded),
                PostgresFinish(
                    targetId: "t", seq: claim.seq, fence: claim.fence + 1, attempt: 1,
                    outcome: .retry(after: .zero, error: "e")),
                PostgresFinish(targetId: "t", seq: claim.seq, fence: 0, attempt: 1, outcome: .park(error: "e")),
                PostgresFinish(
                    targetId: "t", seq: claim.seq + 1, fence: claim.fence, attempt: 1, outcome: .deadLetter(error: "e")),
            ] {
                let report = try await queue.finish([stale])
                #expect(report.applied == [])
                #expect(report.stale == [stale])
            }
            #expect(try await target(queue, "t") == before)
            #expect(try await count(queue, "SELECT count(*) FROM th_dead") == 0)
            #expect(try await count(queue, "SELECT count(*) FROM th_task") == 2)
            // The claim's own fence is applied, once: the same outcome again is stale.
            #expect(try await queue.finish([PostgresFinish(claim, .succeeded)]).applied.count == 1)
            #expect(try await queue.finish([PostgresFinish(claim, .succeeded)]).stale.count == 1)
        }
    }

    @Test func theReaperReturnsADeadHostsTargetsWithTheAttemptCountedAndRefusesItsLateCompletion() async throws {
        try await withQueue { queue in
            _ = try await queue.enqueue([task("p", "p1"), task("p", "p2"), task("q", "q1"), task("r", "r1")])
            let dying = try await queue.register(name: "dying", pid: 1, maxConcurrency: 2)
            let survivor = try await queue.register(name: "survivor", pid: 2, maxConcurrency: 4)
            let lost = try #require(try await queue.claim(host: dying, limit: 2))
            #expect(lost.count == 2)
            // Nothing to reap while every lease is valid.
            #expect(try await queue.reap().hosts == [])
            // The lease ends on the database's clock (moved there rather than waited for).
            try await queue.client.query(
                "UPDATE th_host SET lease_until = now() - interval '1 second' WHERE host_id = \(dying)")
            // A host past its lease claims nothing, even before the reaper ran.
            #expect(try await queue.claim(host: dying, limit: 2) == nil)
            let reaped = try await queue.reap()
            #expect(reaped.hosts == [dying])
            #expect(Set(reaped.targets.map(\.targetId)) == Set(lost.map(\.targetId)))
            #expect(reaped.targets.allSatisfy { $0.attempts == 1 })
            #expect(try await queue.reap().targets == [])
            // The dead host learns it on its next renewal.
            #expect(try await queue.renew(host: dying) == false)
            #expect(try await queue.renew(host: survivor) == true)
            // The survivor takes them at their heads, on the second attempt, with a new fence.
            let taken = try #require(try await queue.claim(host: survivor, limit: 4))
            #expect(taken.count == 3)
            for claim in lost {
                let again = try #require(taken.first { $0.targetId == claim.targetId })
                #expect(again.seq == claim.seq)
                #expect(again.attempt == 2)
                #expect(again.fence == claim.fence + 1)
                #expect(again.deaths == 1)
            }
            // The dead host's late completion is refused; the survivor's counts.
            let late = try await queue.finish(lost.map { PostgresFinish($0, .succeeded) })
            #expect(late.applied == [])
            #expect(late.stale.count == 2)
            let done = try await queue.finish(taken.map { PostgresFinish($0, .succeeded) })
            #expect(done.stale == [])
            #expect(try await count(queue, "SELECT count(*) FROM th_task") == 1)
        }
    }

    @Test func aLateCompletionBeforeTheReaperCommitsIsAppliedAndTheReaperThenSkipsTheTarget() async throws {
        try await withQueue { queue in
            _ = try await queue.enqueue([task("t", "1")])
            let host = try await queue.register(name: "h", pid: 1, maxConcurrency: 1)
            let claim = try #require(try await queue.claim(host: host, limit: 1)?.first)
            try await queue.client.query(
                "UPDATE th_host SET lease_until = now() - interval '1 second' WHERE host_id = \(host)")
            try await withConnections(queue) { a, b in
                // The completion holds the target row; the reaper waits for it, then finds the
                // target no longer running and leaves it alone.
                try await begin(a)
                let report = try await PostgresQueue.Statements.finish(
                    [PostgresFinish(claim, .succeeded)], on: a, logger: testLogger)
                #expect(report.applied.count == 1)
                let pid = try await backendPID(b)
                async let reaped = { () async throws -> [PostgresReaped] in
                    try await begin(b)
                    let result = try await PostgresQueue.Statements.reap(on: b, logger: testLogger)
                    try await commit(b)
                    return result.targets
                }()
                try await waitUntilBlocked(queue, pid: pid)
                try await commit(a)
                #expect(try await reaped == [])
            }
            #expect(try await target(queue, "t")?.state == "idle")
        }
    }

    @Test(arguments: [true, false])
    func anEnqueueRacingTheCompletionThatEmptiesTheTargetOrphansNothing(completionFirst: Bool) async throws {
        try await withQueue { queue in
            _ = try await queue.enqueue([task("t", "1")])
            let host = try await queue.register(name: "h", pid: 1, maxConcurrency: 1)
            let claim = try #require(try await queue.claim(host: host, limit: 1)?.first)
            try await withConnections(queue) { a, b in
                let (first, second) = completionFirst ? (a, b) : (b, a)
                // `first` takes the target row and holds it; `second` waits for it.
                try await begin(first)
                if completionFirst {
                    let report = try await PostgresQueue.Statements.finish(
                        [PostgresFinish(claim, .succeeded)], on: a, logger: testLogger)
                    #expect(report.applied.count == 1)
                } else {
                    #expect(
                        try await PostgresQueue.Statements.enqueue([task("t", "2")], on: b, logger: testLogger) == [2])
                }
                let pid = try await backendPID(second)
                async let waited = { () async throws -> Void in
                    try await begin(second)
                    if completionFirst {
                        let seqs = try await PostgresQueue.Statements.enqueue(
                            [task("t", "2")], on: b, logger: testLogger)
                        #expect(seqs == [2])
                    } else {
                        let report = try await PostgresQueue.Statements.finish(
                            [PostgresFinish(claim, .succeeded)], on: a, logger: testLogger)
                        #expect(report.applied.count == 1)
                    }
                    try await commit(second)
                }()
                try await waitUntilBlocked(queue, pid: pid)
                try await commit(first)
                try await waited
            }
            // Either way the new task is the target's ready head, and is claimed.
            #expect(
                try await target(queue, "t")
                    == TargetRow(state: "ready", headSeq: 2, tailSeq: 2, headAttempt: 0, fence: 1, owner: nil))
            let next = try #require(try await queue.claim(host: host, limit: 1)?.first)
            #expect(next.taskId == "2")
            #expect(try await count(queue, "SELECT count(*) FROM th_task") == 1)
        }
    }

    @Test func batchedEnqueuesOverTheSameTargetsInOppositeOrdersDoNotDeadlock() async throws {
        try await withQueue { queue in
            let targets = (0..<50).map { "k\($0)" }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for round in 0..<4 {
                    let order = round % 2 == 0 ? targets : targets.reversed()
                    group.addTask {
                        for batch in 0..<5 {
                            _ = try await queue.enqueue(order.map { task($0, "\(round)-\(batch)-\($0)") })
                        }
                    }
                }
                try await group.waitForAll()
            }
            // Every target's tasks are numbered 1…20 without a gap or a duplicate.
            #expect(try await count(queue, "SELECT count(*) FROM th_task") == 1000)
            #expect(
                try await count(queue, "SELECT count(*) FROM th_target WHERE tail_seq = 20 AND head_seq = 1") == 50)
            #expect(
                try await count(
                    queue, "SELECT count(DISTINCT (target_id, seq)) FROM th_task WHERE seq BETWEEN 1 AND 20") == 1000)
        }
    }
}
