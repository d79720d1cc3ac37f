import Foundation
import Logging
import Synchronization
import TaskHostConfig
import TaskHostSources
import TaskHostStore
import Testing

/// Cron schedules: next fire times against a table of known answers (names, macros, `@every`, the
/// day-of-month OR day-of-week rule, leap days, daylight saving time in Berlin and New York),
/// schedules refused, and the interval source on a manual clock.
@Suite struct CronScheduleTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var cron: String
        var zone: String = "UTC"
        var start: String
        var next: [String]
        var testDescription: String { "\(cron) [\(zone)] after \(start)" }
    }

    static func date(_ text: String) -> Date {
        guard let date = ISO8601DateFormatter().date(from: text) else { fatalError("bad date in test: \(text)") }
        return date
    }

    static let cases: [Case] = [
        // The three reported bugs: no minute, hour or day skipped.
        Case(
            cron: "* * * * *", start: "2026-12-07T14:31:49Z",
            next: ["2026-12-07T14:32:00Z", "2026-12-07T14:33:00Z", "2026-12-07T14:34:00Z"]),
        Case(
            cron: "0 * * * *", start: "2026-12-07T10:59:30Z",
            next: ["2026-12-07T11:00:00Z", "2026-12-07T12:00:00Z", "2026-12-07T13:00:00Z"]),
        Case(
            cron: "0 0 * * *", start: "2026-12-07T23:59:59Z",
            next: ["2026-12-08T00:00:00Z", "2026-12-09T00:00:00Z", "2026-12-10T00:00:00Z"]),
        // Strictly after: a fire time is never its own next.
        Case(
            cron: "* * * * *", start: "2026-12-07T14:32:00Z",
            next: ["2026-12-07T14:33:00Z", "2026-12-07T14:34:00Z", "2026-12-07T14:35:00Z"]),
        Case(
            cron: "1-30/5 * * * *", start: "2026-12-07T14:31:49Z",
            next: ["2026-12-07T15:01:00Z", "2026-12-07T15:06:00Z", "2026-12-07T15:11:00Z"]),
        Case(
            cron: "*/15 9-10 * * *", start: "2026-12-07T10:50:00Z",
            next: ["2026-12-08T09:00:00Z", "2026-12-08T09:15:00Z", "2026-12-08T09:30:00Z"]),
        // Names, in any case; 2026-12-04 is a Friday.
        Case(
            cron: "30 9 * * MON-FRI", start: "2026-12-04T10:00:00Z",
            next: ["2026-12-07T09:30:00Z", "2026-12-08T09:30:00Z", "2026-12-09T09:30:00Z"]),
        Case(
            cron: "0 6 * jan Mon", start: "2026-12-07T00:00:00Z",
            next: ["2027-01-04T06:00:00Z", "2027-01-11T06:00:00Z", "2027-01-18T06:00:00Z"]),
        Case(
            cron: "0 0 1 JAN,Jul *", start: "2026-12-07T00:00:00Z",
            next: ["2027-01-01T00:00:00Z", "2027-07-01T00:00:00Z", "2028-01-01T00:00:00Z"]),
        // 7 is Sunday, as 0.
        Case(
            cron: "0 0 * * 7", start: "2026-12-07T00:00:00Z",
            next: ["2026-12-13T00:00:00Z", "2026-12-20T00:00:00Z", "2026-12-27T00:00:00Z"]),
        // Both day fields restricted: a day matching either fires (the 13th is a Sunday).
        Case(
            cron: "0 0 13 * FRI", start: "2026-12-07T00:00:00Z",
            next: ["2026-12-11T00:00:00Z", "2026-12-13T00:00:00Z", "2026-12-18T00:00:00Z"]),
        // A day-of-week starting with `*` does not restrict: both must match.
        Case(
            cron: "0 0 */10 * *", start: "2026-12-07T00:00:00Z",
            next: ["2026-12-11T00:00:00Z", "2026-12-21T00:00:00Z", "2026-12-31T00:00:00Z"]),
        // February 29 only in leap years.
        Case(
            cron: "0 0 29 2 *", start: "2026-12-07T00:00:00Z",
            next: ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z", "2036-02-29T00:00:00Z"]),
        // Macros.
        Case(
            cron: "@daily", start: "2026-12-07T14:31:49Z",
            next: ["2026-12-08T00:00:00Z", "2026-12-09T00:00:00Z", "2026-12-10T00:00:00Z"]),
        Case(
            cron: "@midnight", start: "2026-12-31T23:59:59Z",
            next: ["2027-01-01T00:00:00Z", "2027-01-02T00:00:00Z", "2027-01-03T00:00:00Z"]),
        Case(
            cron: "@hourly", start: "2026-12-07T14:31:49Z",
            next: ["2026-12-07T15:00:00Z", "2026-12-07T16:00:00Z", "2026-12-07T17:00:00Z"]),
        Case(
            cron: "@weekly", start: "2026-12-07T14:31:49Z",
            next: ["2026-12-13T00:00:00Z", "2026-12-20T00:00:00Z", "2026-12-27T00:00:00Z"]),
        Case(
            cron: "@monthly", start: "2026-12-07T14:31:49Z",
            next: ["2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z"]),
        Case(
            cron: "@yearly", start: "2026-12-07T14:31:49Z",
            next: ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z"]),
        Case(
            cron: "@annually", start: "2027-01-01T00:00:00Z",
            next: ["2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z", "2030-01-01T00:00:00Z"]),
        // A fixed period, counted from the start.
        Case(
            cron: "@every 5m", start: "2026-12-07T14:31:49Z",
            next: ["2026-12-07T14:36:49Z", "2026-12-07T14:41:49Z", "2026-12-07T14:46:49Z"]),
        Case(
            cron: "@every 1h30m", start: "2026-12-07T00:00:00Z",
            next: ["2026-12-07T01:30:00Z", "2026-12-07T03:00:00Z", "2026-12-07T04:30:00Z"]),
        Case(
            cron: "@every 30s", start: "2026-12-07T00:00:00Z",
            next: ["2026-12-07T00:00:30Z", "2026-12-07T00:01:00Z", "2026-12-07T00:01:30Z"]),
        // Europe/Berlin, spring forward on 2027-03-28 (02:00 CET becomes 03:00 CEST): a skipped wall
        // time fires at the first instant after the gap, once.
        Case(
            cron: "30 2 * * *", zone: "Europe/Berlin", start: "2027-03-27T12:00:00+01:00",
            next: ["2027-03-28T03:00:00+02:00", "2027-03-29T02:30:00+02:00", "2027-03-30T02:30:00+02:00"]),
        Case(
            cron: "*/30 * * * *", zone: "Europe/Berlin", start: "2027-03-28T01:10:00+01:00",
            next: ["2027-03-28T01:30:00+01:00", "2027-03-28T03:00:00+02:00", "2027-03-28T03:30:00+02:00"]),
        Case(
            cron: "@daily", zone: "Europe/Berlin", start: "2027-03-27T12:00:00+01:00",
            next: ["2027-03-28T00:00:00+01:00", "2027-03-29T00:00:00+02:00", "2027-03-30T00:00:00+02:00"]),
        // Fall back on 2027-10-31 (03:00 CEST becomes 02:00 CET): a repeated wall time fires once.
        Case(
            cron: "30 2 * * *", zone: "Europe/Berlin", start: "2027-10-30T12:00:00+02:00",
            next: ["2027-10-31T02:30:00+02:00", "2027-11-01T02:30:00+01:00", "2027-11-02T02:30:00+01:00"]),
        Case(
            cron: "0 * * * *", zone: "Europe/Berlin", start: "2027-10-31T01:30:00+02:00",
            next: ["2027-10-31T02:00:00+02:00", "2027-10-31T03:00:00+01:00", "2027-10-31T04:00:00+01:00"]),
        Case(
            cron: "*/20 * * * *", zone: "Europe/Berlin", start: "2027-10-31T02:30:00+02:00",
            next: ["2027-10-31T02:40:00+02:00", "2027-10-31T03:00:00+01:00", "2027-10-31T03:20:00+01:00"]),
        // From inside the repeated hour (its second pass): nothing fires again until it is over.
        Case(
            cron: "*/20 * * * *", zone: "Europe/Berlin", start: "2027-10-31T02:10:00+01:00",
            next: ["2027-10-31T03:00:00+01:00", "2027-10-31T03:20:00+01:00", "2027-10-31T03:40:00+01:00"]),
        // America/New_York: spring forward 2027-03-14 02:00 EST, fall back 2027-11-07 02:00 EDT.
        Case(
            cron: "30 2 * * *", zone: "America/New_York", start: "2027-03-13T12:00:00-05:00",
            next: ["2027-03-14T03:00:00-04:00", "2027-03-15T02:30:00-04:00", "2027-03-16T02:30:00-04:00"]),
        Case(
            cron: "30 1 * * *", zone: "America/New_York", start: "2027-11-06T12:00:00-04:00",
            next: ["2027-11-07T01:30:00-04:00", "2027-11-08T01:30:00-05:00", "2027-11-09T01:30:00-05:00"]),
        Case(
            cron: "0 9 * * MON-FRI", zone: "America/New_York", start: "2027-03-12T10:00:00-05:00",
            next: ["2027-03-15T09:00:00-04:00", "2027-03-16T09:00:00-04:00", "2027-03-17T09:00:00-04:00"]),
    ]

    @Test("Next fire times match the table", arguments: cases)
    func nextFireTimes(_ item: Case) throws {
        let schedule = try CronSchedule(parsing: item.cron, timeZone: try #require(TimeZone(identifier: item.zone)))
        let times = schedule.upcoming(3, after: Self.date(item.start))
        #expect(times.map(schedule.rfc3339) == item.next)
        #expect(times.map { $0.timeIntervalSince1970 } == item.next.map { Self.date($0).timeIntervalSince1970 })
    }

    @Test(
        "A schedule that can never fire, or cannot be read, is refused with what to write",
        arguments: [
            ("0 0 30 2 *", "never fires"), ("0 0 31 4,6,9,11 *", "never fires"), ("0 0 31 2 *", "never fires"),
            ("60 * * * *", "minute '60' is outside 0-59"), ("* * * *", "has 4 fields"),
            ("* * * FOO *", "bad month 'FOO'; write values in 1-12 or JAN-DEC"),
            ("* * * * FRI-MON", "runs backwards"), ("*/0 * * * *", "bad step"), ("@reboot", "unknown macro"),
            ("@every 0s", "@every takes one duration"), ("@every 5x", "@every takes one duration"),
            ("@every", "@every takes one duration"), ("@every 999999d999999d999999d", "@every takes one duration"),
        ])
    func refused(_ cron: String, _ message: String) {
        #expect {
            _ = try CronSchedule(parsing: cron)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    @Test("Day of month OR day of week: February 30 or a Monday fires on February's Mondays")
    func impossibleDayWithWeekday() throws {
        let schedule = try CronSchedule(parsing: "0 0 30 2 MON")
        let next = try #require(schedule.next(after: Self.date("2026-12-07T12:00:00Z")))
        #expect(schedule.rfc3339(next) == "2027-02-01T00:00:00Z")
    }

    @Test("Field-wise search agrees with a day-by-day scan in UTC (random schedules; the seed replays a failure)")
    func matchesBruteForce() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var generator = SplitMix(seed: seed)
        func field(_ range: ClosedRange<Int>) -> String {
            switch generator.next() % 4 {
            case 0: return "*"
            case 1: return "\(range.lowerBound + Int(generator.next() % UInt64(range.count)))"
            case 2: return "*/\(2 + generator.next() % 9)"
            default:
                let low = range.lowerBound + Int(generator.next() % UInt64(range.count))
                return "\(low)-\(min(range.upperBound, low + Int(generator.next() % 10)))"
            }
        }
        for _ in 0..<200 {
            let text = [field(0...59), field(0...23), field(1...31), field(1...12), field(0...6)].joined(
                separator: " ")
            guard let schedule = try? CronSchedule(parsing: text) else { continue }
            var utc = Calendar(identifier: .gregorian)
            utc.timeZone = TimeZone(identifier: "UTC")!
            let start = Self.date("2026-12-07T14:31:49Z")
            guard let found = schedule.next(after: start) else {
                Issue.record("seed \(seed): '\(text)' found nothing")
                continue
            }
            // Scan day by day (Calendar's date) and minute by minute up to the time found: nothing in
            // between may match.
            var day = utc.startOfDay(for: start)
            var scanned = 0
            scan: while day < found && scanned < 4000 {
                let parts = utc.dateComponents([.day, .month, .weekday], from: day)
                if schedule.months.contains(parts.month!)
                    && schedule.dayMatches(day: parts.day!, weekday: parts.weekday! - 1)
                {
                    for hour in schedule.hours {
                        for minute in schedule.minutes {
                            let time = day + Double(hour * 3600 + minute * 60)
                            guard time > start && time < found else { continue }
                            Issue.record("seed \(seed): '\(text)' matches \(time) before \(found)")
                            break scan
                        }
                    }
                }
                day = utc.date(byAdding: .day, value: 1, to: day)!
                scanned += 1
            }
            let parts = utc.dateComponents([.second, .minute, .hour, .day, .month, .weekday], from: found)
            #expect(parts.second == 0 && schedule.minutes.contains(parts.minute!), "seed \(seed): '\(text)'")
            #expect(schedule.hours.contains(parts.hour!) && schedule.months.contains(parts.month!), "seed \(seed)")
            #expect(schedule.dayMatches(day: parts.day!, weekday: parts.weekday! - 1), "seed \(seed): '\(text)'")
        }
    }

    @Test(
        "The interval source fires at the next minute, a second-late wake-up skips nothing, a long pause fires once"
    )
    func sourceOnManualClock() async throws {
        let clock = ManualClock(now: Self.date("2026-12-07T14:31:49Z"))
        let source = IntervalSource(
            name: "tick", schedule: .cron(try CronSchedule(parsing: "* * * * *")), template: #"{"targetId": "t"}"#,
            count: 4, clock: clock)
        let intake = RecordingIntake(clock: clock)
        async let run: Void = source.run(into: intake, stopper: StopSignal(), logger: Logger(label: "test"))
        #expect(await clock.nextSleep() == Self.date("2026-12-07T14:32:00Z"))
        clock.advance(to: Self.date("2026-12-07T14:32:01Z"))  // a second late
        #expect(await clock.nextSleep() == Self.date("2026-12-07T14:33:00Z"))
        clock.advance(to: Self.date("2026-12-07T14:33:00Z"))
        #expect(await clock.nextSleep() == Self.date("2026-12-07T14:34:00Z"))
        clock.advance(to: Self.date("2026-12-07T14:36:30Z"))  // a pause past 14:34, 14:35 and 14:36
        #expect(await clock.nextSleep() == Self.date("2026-12-07T14:37:00Z"))
        clock.advance(to: Self.date("2026-12-07T14:37:00Z"))
        try await run
        #expect(
            intake.times
                == ["2026-12-07T14:32:01Z", "2026-12-07T14:33:00Z", "2026-12-07T14:36:30Z", "2026-12-07T14:37:00Z"]
                .map(Self.date))
    }

    @Test(
        "The interval source sleeps until the right fire time from a start between two",
        arguments: [
            ("0 * * * *", "2026-12-07T10:59:30Z", "2026-12-07T11:00:00Z"),
            ("0 0 * * *", "2026-12-07T23:59:59Z", "2026-12-08T00:00:00Z"),
        ])
    func sourceFirstFire(_ cron: String, _ start: String, _ expected: String) async throws {
        let clock = ManualClock(now: Self.date(start))
        let source = IntervalSource(
            name: "tick", schedule: .cron(try CronSchedule(parsing: cron)), template: #"{"targetId": "t"}"#, count: 1,
            clock: clock)
        let intake = RecordingIntake(clock: clock)
        async let run: Void = source.run(into: intake, stopper: StopSignal(), logger: Logger(label: "test"))
        #expect(await clock.nextSleep() == Self.date(expected))
        clock.advance(to: Self.date(expected))
        try await run
        #expect(intake.times == [Self.date(expected)])
    }
}

/// A wall clock the test moves: the source's sleep returns when the test advances past it.
final class ManualClock: WallClock {
    private struct State {
        var now: Date
        var sleeper: (deadline: Date, continuation: CheckedContinuation<Void, Never>)?
        var reported = false
        var waiter: CheckedContinuation<Date, Never>?
    }

    private let state: Mutex<State>

    init(now: Date) { state = Mutex(State(now: now)) }

    var now: Date { state.withLock { $0.now } }

    func sleep(until date: Date, stopper: StopSignal) async throws -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let (waiter, now) = state.withLock { state in
                state.sleeper = (date, continuation)
                state.reported = state.waiter != nil
                defer { state.waiter = nil }
                return (state.waiter, state.now >= date)
            }
            waiter?.resume(returning: date)
            if now { advance(to: self.now) }
        }
        return true
    }

    /// Waits until the source sleeps, and returns until when.
    func nextSleep() async -> Date {
        await withCheckedContinuation { (continuation: CheckedContinuation<Date, Never>) in
            let ready = state.withLock { state -> Date? in
                if let sleeper = state.sleeper, !state.reported {
                    state.reported = true
                    return sleeper.deadline
                }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    func advance(to date: Date) {
        let woken = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.now = date
            guard let sleeper = state.sleeper, sleeper.deadline <= date else { return nil }
            state.sleeper = nil
            state.reported = false
            return sleeper.continuation
        }
        woken?.resume()
    }
}

/// An intake that records when each task came (on the manual clock).
final class RecordingIntake: SourceIntake {
    let clock: ManualClock
    private let received = Mutex<[Date]>([])

    init(clock: ManualClock) { self.clock = clock }

    var times: [Date] { received.withLock { $0 } }

    func accept(_ line: SourceLine, batch: BatchTracker?, checkpoint: Checkpoint?) async -> Admitted {
        received.withLock { $0.append(clock.now) }
        return Admitted(id: "t", error: nil)
    }
    func flush() async -> Bool { true }
    var canContinue: Bool { true }
    var keepsCheckpoints: Bool { false }
    func start(file: String?) async -> (offset: Int64, complete: Bool, rotated: String?) { (0, false, nil) }
    func openBatch(_ name: String) async -> (tracker: BatchTracker, offset: Int64, complete: Bool) {
        (BatchTracker(name: name, done: { _ in }), 0, false)
    }
    func dropBatch(_ name: String) {}
    func mark(_ checkpoint: Checkpoint) {}
    var isFull: Bool { false }
    var failure: String? { nil }
}
