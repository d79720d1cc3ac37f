// Fuzz target: the cron parser. Only the two functions below know the parser's API: a new parser
// needs only them changed. Whatever the text, it answers with a schedule or an error.
// Built by scripts/fuzz.sh with Sources/TaskHostConfig, linked with the modules it imports.

import Foundation
import TaskHostConfig

func parseCron(_ text: String) -> CronSchedule? {
    try? CronSchedule(parsing: text)
}

func nextFire(of schedule: CronSchedule, after date: Date) -> Date? {
    schedule.next(after: date)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCron(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard count <= 256, let text = String(validating: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    else { return 0 }
    guard let schedule = parseCron(text) else { return 0 }
    // A schedule that parsed gives its next times without trapping, each after the last (a
    // schedule that never fires is refused when parsed; the search is field-wise and bounded).
    var date = Date(timeIntervalSince1970: 1_800_000_000)
    for _ in 0..<3 {
        guard let next = nextFire(of: schedule, after: date) else { break }
        guard next > date else { fatalError("next(after:) went back: \(next) after \(date)") }
        date = next
    }
    return 0
}
