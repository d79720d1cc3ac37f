import Foundation
import TaskHostJSON
import TaskHostStore

/// A five-field cron expression (minute hour day-of-month month day-of-week), in UTC:
/// `*`, numbers, lists `1,15`, ranges `1-5` and steps `*/10` or `0-30/5`. Sunday is 0 (or 7).
/// As in cron, when both day fields are restricted a day matching either one matches.
package struct CronSchedule: Sendable, Equatable {
    package let minutes: Set<Int>
    package let hours: Set<Int>
    package let days: Set<Int>
    package let months: Set<Int>
    package let weekdays: Set<Int>
    package let daysRestricted: Bool
    package let weekdaysRestricted: Bool

    /// An expression that cannot be read: the message quotes it and says what is wrong.
    package struct SyntaxError: Error, CustomStringConvertible, Sendable {
        package var description: String
        package init(_ description: String) { self.description = description }
    }

    package init(parsing text: String) throws(CronSchedule.SyntaxError) {
        let fields = text.split(whereSeparator: \.isWhitespace).map(String.init)
        guard fields.count == 5 else {
            throw SyntaxError(
                "cron '\(text)' has \(fields.count) fields; write minute hour day month weekday, like \"*/5 * * * *\"")
        }
        minutes = try Self.field(fields[0], "minute", 0...59, text)
        hours = try Self.field(fields[1], "hour", 0...23, text)
        days = try Self.field(fields[2], "day of month", 1...31, text)
        months = try Self.field(fields[3], "month", 1...12, text)
        weekdays = Set(try Self.field(fields[4], "day of week", 0...7, text).map { $0 % 7 })
        daysRestricted = fields[2] != "*"
        weekdaysRestricted = fields[4] != "*"
    }

    package static func field(_ text: String, _ name: String, _ range: ClosedRange<Int>, _ whole: String)
        throws(CronSchedule.SyntaxError)
        -> Set<Int>
    {
        var values = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2, let base = pieces.first else {
                throw SyntaxError("cron '\(whole)': bad \(name) '\(part)'")
            }
            var step = 1
            if pieces.count == 2 {
                guard let parsed = Int(pieces[1]), parsed > 0 else {
                    throw SyntaxError("cron '\(whole)': bad step in \(name) '\(part)'")
                }
                step = parsed
            }
            var low = range.lowerBound
            var high = range.upperBound
            if base != "*" {
                let bounds = base.split(separator: "-", omittingEmptySubsequences: false)
                guard (1...2).contains(bounds.count), let first = Int(bounds[0]),
                    let last = bounds.count == 2 ? Int(bounds[1]) : (pieces.count == 2 ? range.upperBound : first)
                else { throw SyntaxError("cron '\(whole)': bad \(name) '\(part)'") }
                low = first
                high = last
            }
            guard range.contains(low), range.contains(high), low <= high else {
                throw SyntaxError(
                    "cron '\(whole)': \(name) '\(part)' is outside \(range.lowerBound)-\(range.upperBound)")
            }
            values.formUnion(stride(from: low, through: high, by: step))
        }
        return values
    }

    /// The first matching minute strictly after `date`.
    package func next(after date: Date) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        var candidate = calendar.date(bySetting: .second, value: 0, of: date.addingTimeInterval(60)) ?? date
        if candidate <= date { candidate = candidate.addingTimeInterval(60) }
        // At most a few years of minutes; a schedule that never matches (Feb 30) gives nil.
        for _ in 0..<(4 * 366 * 24 * 60) {
            let parts = calendar.dateComponents([.minute, .hour, .day, .month, .weekday], from: candidate)
            let weekday = (parts.weekday! + 6) % 7
            let dayMatches: Bool
            if daysRestricted && weekdaysRestricted {
                dayMatches = days.contains(parts.day!) || weekdays.contains(weekday)
            } else {
                dayMatches = days.contains(parts.day!) && weekdays.contains(weekday)
            }
            if !months.contains(parts.month!) || !dayMatches {
                candidate = calendar.startOfDay(for: candidate).addingTimeInterval(86_400)
                continue
            }
            if !hours.contains(parts.hour!) {
                candidate = candidate.addingTimeInterval(Double(60 - parts.minute!) * 60)
                continue
            }
            if minutes.contains(parts.minute!) { return candidate }
            candidate = candidate.addingTimeInterval(60)
        }
        return nil
    }
}
