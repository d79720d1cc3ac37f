import Synchronization
import Testing

@testable import TaskHostScheduler

/// The hooks a durable store uses to keep the scheduler the only policy engine: the outcome is
/// recorded before the target moves on, and a task brings its attempts and backoff from before.
@Suite struct StoreHookTests {
    typealias S = Scheduler<GatedExecutor, ManualClock>

    /// Records what `beforeRelease` was told and holds each call until the test opens it.
    final class Recorder: @unchecked Sendable {
        struct Record: Equatable {
            var payload: Int
            var attempt: Int
            var disposition: String
        }
        private let state = StateLock<(records: [Record], waiting: [CheckedContinuation<Void, Never>])>(([], []))

        var records: [Record] { state.withLock { $0.records } }
        var waitingCount: Int { state.withLock { $0.waiting.count } }

        func record(_ attempt: AttemptRecord<Int>) async {
            await withCheckedContinuation { continuation in
                state.withLock {
                    $0.records.append(
                        Record(
                            payload: attempt.task.payload, attempt: attempt.context.attempt,
                            disposition: "\(attempt.disposition)"))
                    $0.waiting.append(continuation)
                }
            }
        }

        /// Lets the oldest waiting call return.
        func openOne() {
            state.withLock { $0.waiting.isEmpty ? nil : $0.waiting.removeFirst() }?.resume()
        }
    }

    @Test("beforeRelease records each outcome while the attempt still holds its target and its slot")
    func outcomeBeforeRelease() async {
        let executor = GatedExecutor()
        let clock = ManualClock()
        let recorder = Recorder()
        var configuration = SchedulerConfiguration(maxConcurrency: 1)
        configuration.retry = RetryPolicy(maxAttempts: 2, backoff: .fixed(.seconds(10)))
        let s = S(
            executor: executor, configuration: configuration, clock: clock,
            hooks: SchedulerHooks(beforeRelease: { await recorder.record($0) }), random: { 0.5 })
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["A", "A", "B"])), in: &group)
            await eventually { executor.isWaiting(0) }
            executor.open(0, succeed: false)
            await eventually { recorder.waitingCount == 1 }
            // Recorded as a retry, not released yet: the only slot is still held, nothing else starts.
            #expect(recorder.records == [.init(payload: 0, attempt: 1, disposition: "retrying(after: 10.0 seconds)")])
            #expect(s.snapshot().running == 1)
            #expect(executor.started == [0])
            recorder.openOne()
            // Released: A backs off holding its head, B gets the slot.
            await eventually { executor.isWaiting(2) }
            #expect(s.snapshot().backedOffTargets == 1)
            executor.open(2)
            await eventually { recorder.waitingCount == 1 }
            recorder.openOne()
            await eventually { s.snapshot().running == 0 }
            clock.advance(by: .seconds(10))
            await eventually { executor.isWaiting(0) }
            executor.open(0)
            await eventually { recorder.waitingCount == 1 }
            // Task 1 waits behind its head until the head's success is recorded.
            #expect(!executor.isWaiting(1))
            recorder.openOne()
            await eventually { executor.isWaiting(1) }
            executor.open(1)
            await eventually { recorder.waitingCount == 1 }
            recorder.openOne()
            await eventually { run.isFinished }
            #expect(run.summary?.succeeded == 3)
            #expect(run.summary?.retries == 1)
        }
        #expect(
            recorder.records.map { "\($0.payload)/\($0.attempt) \($0.disposition)" } == [
                "0/1 retrying(after: 10.0 seconds)", "2/1 succeeded", "0/2 succeeded", "1/1 succeeded",
            ])
    }

    @Test("The last attempt's dead letter or park is recorded before the target moves on", arguments: [false, true])
    func exhaustedBeforeRelease(park: Bool) async {
        let executor = GatedExecutor()
        let recorder = Recorder()
        var configuration = SchedulerConfiguration()
        configuration.onExhausted = park ? .park : .deadLetter
        let s = S(
            executor: executor, configuration: configuration, clock: ManualClock(),
            hooks: SchedulerHooks(beforeRelease: { await recorder.record($0) }))
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["A", "A"])), in: &group)
            await eventually { executor.isWaiting(0) }
            executor.open(0, succeed: false)
            await eventually { recorder.waitingCount == 1 }
            #expect(recorder.records.map(\.disposition) == [park ? "parked" : "deadLettered"])
            #expect(!executor.isWaiting(1))
            recorder.openOne()
            if park {
                await eventually { run.isFinished }
                #expect(run.summary?.parked == 2)
            } else {
                await eventually { executor.isWaiting(1) }
                executor.open(1)
                await eventually { recorder.waitingCount == 1 }
                recorder.openOne()
                await eventually { run.isFinished }
                #expect(run.summary?.deadLettered == 1)
                #expect(run.summary?.succeeded == 1)
            }
        }
    }

    @Test("A retry recorded while a shutdown begins goes back to the head of its target, as recorded")
    func shutdownDuringBeforeRelease() async {
        let executor = GatedExecutor()
        let recorder = Recorder()
        var configuration = SchedulerConfiguration()
        configuration.retry = RetryPolicy(maxAttempts: 3, backoff: .fixed(.seconds(10)))
        let s = S(
            executor: executor, configuration: configuration, clock: ManualClock(),
            hooks: SchedulerHooks(beforeRelease: { await recorder.record($0) }))
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["A"])), in: &group)
            await eventually { executor.isWaiting(0) }
            executor.open(0, succeed: false)
            await eventually { recorder.waitingCount == 1 }
            s.shutdown(gracePeriod: .seconds(60))
            recorder.openOne()
            await eventually { run.isFinished }
            #expect(run.summary?.cancelled == 1)
            #expect(run.summary?.unfinished.first?.attempts == 1)
        }
        #expect(recorder.records.map(\.disposition) == ["retrying(after: 10.0 seconds)"])
    }

    @Test("History: attempts made before count towards maxAttempts; startAfter holds the head, not a slot")
    func history() async {
        let executor = GatedExecutor()
        let clock = ManualClock()
        var configuration = SchedulerConfiguration(maxConcurrency: 1)
        configuration.retry = RetryPolicy(maxAttempts: 3, backoff: .fixed(.seconds(1)))
        let s = S(
            executor: executor, configuration: configuration, clock: clock,
            hooks: SchedulerHooks(history: { task in
                task.payload == 0 ? TaskHistory(attempts: 2, startAfter: .seconds(5)) : nil
            }))
        await withTaskGroup(of: Void.self) { group in
            let run = start(s, ListSource(tasks(["A", "B", "A"])), in: &group)
            // A waits out the rest of its backoff: B gets the only slot at once.
            await eventually { executor.isWaiting(1) }
            #expect(s.snapshot().backedOffTargets == 1)
            executor.open(1)
            await eventually { s.snapshot().running == 0 }
            #expect(executor.started == [1])
            clock.advance(by: .seconds(4))
            await eventually { s.snapshot().backedOffTargets == 1 }
            #expect(!executor.isWaiting(0))
            clock.advance(by: .seconds(1))
            await eventually { executor.isWaiting(0) }
            // Its third attempt, the last: a failure dead-letters it, and its follower runs.
            executor.open(0, succeed: false)
            await eventually { executor.isWaiting(2) }
            executor.open(2)
            await eventually { run.isFinished }
            #expect(run.summary?.deadLettered == 1)
            #expect(run.summary?.retries == 0)
        }
        #expect(executor.events.filter { $0.kind == .start }.map(\.attempt) == [1, 3, 1])
    }
}
