import Foundation
import Logging
import TaskHostConfig

/// A task template emitted every period, or on a cron schedule (UTC), `count` times (nil: until
/// the run stops).
struct IntervalSource: TaskSource {
    let name: String
    let schedule: SourceConfig.Schedule
    let template: String
    let count: Int?

    func run(into intake: some SourceIntake, stopper: StopSignal, logger: Logger) async throws(SourceError) {
        _ = await intake.start(file: nil)
        var emitted = 0
        while !stopper.isStopped.load(ordering: .acquiring), count.map({ emitted < $0 }) ?? true {
            do {
                switch schedule {
                case .every(let period):
                    try await Task.sleep(for: period)
                case .cron(let cron):
                    guard let next = cron.next(after: Date()) else { return }
                    try await Task.sleep(for: .seconds(next.timeIntervalSinceNow))
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
