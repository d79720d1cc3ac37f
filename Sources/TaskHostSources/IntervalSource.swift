import Foundation
import Logging
import TaskHostConfig

/// A task template emitted every period, or on a cron schedule, `count` times (nil: until the run
/// stops).
///
/// A cron source computes each fire time strictly after the previous one (the first after the
/// start), never after "now": a wake-up a little late fires on time and skips nothing. Fire times
/// that a long pause passed (a suspended machine) fire once, not in a burst.
package struct IntervalSource: TaskSource {
    package let name: String
    let schedule: SourceConfig.Schedule
    let template: String
    let count: Int?
    let clock: any WallClock

    package init(
        name: String, schedule: SourceConfig.Schedule, template: String, count: Int?,
        clock: any WallClock = SystemWallClock()
    ) {
        self.name = name
        self.schedule = schedule
        self.template = template
        self.count = count
        self.clock = clock
    }

    package func run(into intake: some SourceIntake, stopper: StopSignal, logger: Logger) async throws(SourceError) {
        _ = await intake.start(file: nil)
        var emitted = 0
        var last = clock.now
        while !stopper.isStopped.load(ordering: .acquiring), count.map({ emitted < $0 }) ?? true {
            do {
                switch schedule {
                case .every(let period):
                    try await Task.sleep(for: period)
                case .cron(let cron):
                    guard let due = cron.next(after: last) else {
                        logger.warning("source \(name): cron '\(cron.text)' has no more fire times; it ends")
                        return
                    }
                    guard try await clock.sleep(until: due, stopper: stopper) else { return }
                    let now = clock.now
                    last = due
                    while let later = cron.next(after: last), later <= now { last = later }
                }
            } catch {
                return
            }
            emitted += 1
            if !(await intake.admit(template)) { return }
            await intake.flush()
        }
    }
}

/// The wall clock a cron source reads and sleeps on; tests give it a manual one.
package protocol WallClock: Sendable {
    var now: Date { get }
    /// Returns true at `date` or later, false once `stopper` stops the run first; throws when cancelled.
    func sleep(until date: Date, stopper: StopSignal) async throws -> Bool
}

/// The system's clock.
package struct SystemWallClock: WallClock {
    package init() {}

    package var now: Date { Date() }

    package func sleep(until date: Date, stopper: StopSignal) async throws -> Bool {
        // In steps of at most a second: a stop is seen at once, and a wall clock set forward (or a
        // machine woken from suspend) is noticed, which a single long monotonic sleep would not.
        while !stopper.isStopped.load(ordering: .acquiring) {
            let left = date.timeIntervalSinceNow
            if left <= 0 { return true }
            try await Task.sleep(for: .seconds(min(left, 1)))
        }
        return false
    }
}
