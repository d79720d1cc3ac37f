import Foundation
import TaskHostJSON
import TaskHostStore

/// When an interval source's `cron` fires: a five-field expression (minute hour day-of-month month
/// day-of-week), a macro (`@daily`, `@hourly`, ...) or a fixed period (`@every 5m`), in a time zone
/// (UTC unless one is given).
///
/// Fields take `*`, numbers, names (`JAN`-`DEC`, `SUN`-`SAT`, in any case), lists `1,15`, ranges
/// `MON-FRI` and steps `*/15`, `1-30/5`, `5/10`. Sunday is 0 or 7. As in Vixie cron, when both day
/// fields are restricted (neither starts with `*`) a day matching either one fires.
///
/// Time zones and daylight saving time: a wall time that a spring-forward skips fires at the first
/// instant after the gap (all the skipped times of a day fire there once); a wall time that a
/// fall-back repeats fires once, at its first occurrence.
package struct CronSchedule: Sendable, Equatable {
    package let minutes: [Int]
    package let hours: [Int]
    package let days: Set<Int>
    package let months: Set<Int>
    package let weekdays: Set<Int>
    package let daysRestricted: Bool
    package let weekdaysRestricted: Bool
    /// `@every`: a fixed period, counted from the start (then the fields are unused).
    package let period: Duration?
    package let timeZone: TimeZone
    /// The expression as written.
    package let text: String

    /// How far ahead ``next(after:)`` looks: a schedule with no fire in this many years never fires.
    package static let searchYears = 8

    /// An expression that cannot be read: the message quotes it and says what is wrong.
    package struct SyntaxError: Error, CustomStringConvertible, Sendable {
        package var description: String
        package init(_ description: String) { self.description = description }
    }

    static let macros = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]
    static let monthNames = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    static let dayNames = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]

    /// Reads `text`; throws when it cannot be read or when it never fires (`0 0 30 2 *`).
    package init(parsing text: String, timeZone: TimeZone = TimeZone(identifier: "UTC")!)
        throws(CronSchedule.SyntaxError)
    {
        self.text = text
        self.timeZone = timeZone
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var expression = trimmed
        if trimmed.hasPrefix("@") {
            let words = trimmed.split(whereSeparator: \.isWhitespace)
            let macro = words.first.map { $0.lowercased() } ?? ""
            if macro == "@every" {
                guard words.count == 2, let period = Self.duration(String(words[1])) else {
                    throw SyntaxError(
                        "cron '\(text)': @every takes one duration of hours, minutes and seconds, like "
                            + "\"@every 30s\", \"@every 5m\" or \"@every 1h30m\"")
                }
                self.period = period
                (minutes, hours, days, months, weekdays) = ([], [], [], [], [])
                (daysRestricted, weekdaysRestricted) = (false, false)
                return
            }
            guard words.count == 1, let fields = Self.macros[macro] else {
                throw SyntaxError(
                    "cron '\(text)': unknown macro; write one of @yearly, @annually, @monthly, @weekly, @daily, "
                        + "@midnight, @hourly or @every DURATION")
            }
            expression = fields
        }
        period = nil
        let fields = expression.split(whereSeparator: \.isWhitespace).map(String.init)
        guard fields.count == 5 else {
            throw SyntaxError(
                "cron '\(text)' has \(fields.count) fields; write minute hour day month weekday, like \"*/5 * * * *\", "
                    + "or a macro like @daily")
        }
        minutes = try Self.field(fields[0], "minute", 0...59, [], text).sorted()
        hours = try Self.field(fields[1], "hour", 0...23, [], text).sorted()
        days = try Self.field(fields[2], "day of month", 1...31, [], text)
        months = try Self.field(fields[3], "month", 1...12, Self.monthNames, text)
        weekdays = Set(try Self.field(fields[4], "day of week", 0...7, Self.dayNames, text).map { $0 % 7 })
        // As Vixie cron: a field starting with `*` (`*`, `*/2`) does not restrict the days.
        daysRestricted = !fields[2].hasPrefix("*")
        weekdaysRestricted = !fields[4].hasPrefix("*")
        // A day of week always comes round; otherwise some named month must have one of the days.
        if !(daysRestricted && weekdaysRestricted) {
            let longest = months.map { Self.daysIn(month: $0, year: 2028) }.max() ?? 0
            if let first = days.min(), first > longest {
                let list = days.sorted().map(String.init).joined(separator: ",")
                throw SyntaxError(
                    "cron '\(text)' never fires: no month it names has a day \(list); name a day that exists")
            }
        }
        if next(after: Date()) == nil {
            throw SyntaxError("cron '\(text)' never fires: it has no fire time in the next \(Self.searchYears) years")
        }
    }

    /// One field: its values, each within `range`; `names` (when given) stand for `range`'s first values.
    static func field(
        _ text: String, _ name: String, _ range: ClosedRange<Int>, _ names: [String], _ whole: String
    ) throws(CronSchedule.SyntaxError) -> Set<Int> {
        func value(_ word: Substring) -> Int? {
            if let number = Int(word) { return number }
            return names.firstIndex(of: word.uppercased()).map { $0 + range.lowerBound }
        }
        let accepted =
            names.isEmpty
            ? "\(range.lowerBound)-\(range.upperBound)"
            : "\(range.lowerBound)-\(range.upperBound) or \(names.first!)-\(names.last!)"
        var values = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2, let base = pieces.first else {
                throw SyntaxError("cron '\(whole)': bad \(name) '\(part)'; write values in \(accepted)")
            }
            var step = 1
            if pieces.count == 2 {
                guard let parsed = Int(pieces[1]), parsed > 0 else {
                    throw SyntaxError("cron '\(whole)': bad step in \(name) '\(part)'; a step is a whole number >= 1")
                }
                step = parsed
            }
            var low = range.lowerBound
            var high = range.upperBound
            if base != "*" {
                let bounds = base.split(separator: "-", omittingEmptySubsequences: false)
                guard (1...2).contains(bounds.count), let first = value(bounds[0]),
                    let last = bounds.count == 2 ? value(bounds[1]) : (pieces.count == 2 ? range.upperBound : first)
                else { throw SyntaxError("cron '\(whole)': bad \(name) '\(part)'; write values in \(accepted)") }
                low = first
                high = last
            }
            guard range.contains(low), range.contains(high) else {
                throw SyntaxError("cron '\(whole)': \(name) '\(part)' is outside \(accepted)")
            }
            guard low <= high else {
                throw SyntaxError("cron '\(whole)': \(name) range '\(part)' runs backwards; write it low-high")
            }
            values.formUnion(stride(from: low, through: high, by: step))
        }
        return values
    }

    /// `30s`, `5m`, `1h30m`, `2h`: a whole number of seconds, at least one.
    static func duration(_ text: String) -> Duration? {
        var seconds = 0
        var number = ""
        var units = 0
        for character in text.lowercased() {
            if character.isASCII, character.isNumber {
                number.append(character)
                continue
            }
            let scale: Int
            switch character {
            case "d": scale = 86_400
            case "h": scale = 3_600
            case "m": scale = 60
            case "s": scale = 1
            default: return nil
            }
            guard let value = Int(number), value <= 1_000_000 else { return nil }
            seconds += value * scale
            guard seconds <= 100 * 366 * 86_400 else { return nil }
            number = ""
            units += 1
        }
        guard number.isEmpty, units > 0, seconds > 0 else { return nil }
        return .seconds(seconds)
    }

    /// The first fire time strictly after `date`; nil when there is none in the next
    /// ``searchYears`` years.
    ///
    /// A source computes each fire time after the last one (not after "now"), so a late wake-up
    /// never skips a fire.
    package func next(after date: Date) -> Date? {
        if let period {
            return date.addingTimeInterval(Double(period.components.seconds))
        }
        let second = Int(date.timeIntervalSince1970.rounded(.down))
        let local = second + offset(second)
        // Wall-clock minutes since 1970, in the zone; the first candidate is the next whole minute.
        var minute = Self.floorDivide(local, 60) + 1
        // Each round finds the next matching wall time; a wall time that a fall-back repeats maps
        // to an instant already past and is skipped (at most the repeated minutes).
        for _ in 0..<10_000 {
            guard let match = nextWallMinute(from: minute) else { return nil }
            let instant = instant(ofWallMinute: match)
            if Double(instant) > date.timeIntervalSince1970 {
                return Date(timeIntervalSince1970: Double(instant))
            }
            minute = match + 1
        }
        return nil
    }

    /// The next `count` fire times after `date`.
    package func upcoming(_ count: Int, after date: Date) -> [Date] {
        var times: [Date] = []
        var last = date
        while times.count < count, let next = next(after: last) {
            times.append(next)
            last = next
        }
        return times
    }

    /// `date` in RFC 3339 in this schedule's zone: `2026-12-07T14:32:00Z`, `2027-03-28T03:00:00+02:00`.
    package func rfc3339(_ date: Date) -> String {
        let second = Int(date.timeIntervalSince1970.rounded(.down))
        let offset = offset(second)
        let local = second + offset
        let (year, month, day) = Self.civil(fromDays: Self.floorDivide(local, 86_400))
        let inDay = local - Self.floorDivide(local, 86_400) * 86_400
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let zone: String
        if offset == 0 {
            zone = "Z"
        } else {
            let magnitude = abs(offset) / 60
            zone = (offset < 0 ? "-" : "+") + two(magnitude / 60) + ":" + two(magnitude % 60)
        }
        return "\(year)-\(two(month))-\(two(day))T\(two(inDay / 3600)):\(two(inDay / 60 % 60)):\(two(inDay % 60))"
            + zone
    }

    // MARK: Wall-clock search

    /// The first wall-clock minute at or after `start` (minutes since 1970 on the zone's clock)
    /// whose fields match, field by field: month, then day, then hour, then minute.
    func nextWallMinute(from start: Int) -> Int? {
        var (year, month, day) = Self.civil(fromDays: Self.floorDivide(start, 1440))
        let minuteOfDay = start - Self.floorDivide(start, 1440) * 1440
        var hour = minuteOfDay / 60
        var minute = minuteOfDay % 60
        let lastYear = year + Self.searchYears
        func nextDay() {
            day += 1
            hour = 0
            minute = 0
        }
        while year <= lastYear {
            if !months.contains(month) || day > Self.daysIn(month: month, year: year) {
                month += 1
                if month > 12 { (year, month) = (year + 1, 1) }
                (day, hour, minute) = (1, 0, 0)
                continue
            }
            let days = Self.days(year: year, month: month, day: day)
            if !dayMatches(day: day, weekday: Self.floorModulo(days + 4, 7)) {
                nextDay()
                continue
            }
            guard let matchedHour = hours.first(where: { $0 >= hour }) else {
                nextDay()
                continue
            }
            if matchedHour != hour { (hour, minute) = (matchedHour, 0) }
            guard let matchedMinute = minutes.first(where: { $0 >= minute }) else {
                (hour, minute) = (hour + 1, 0)
                if hour > 23 { nextDay() }
                continue
            }
            return days * 1440 + hour * 60 + matchedMinute
        }
        return nil
    }

    package func dayMatches(day: Int, weekday: Int) -> Bool {
        if daysRestricted && weekdaysRestricted {
            return days.contains(day) || weekdays.contains(weekday)
        }
        return days.contains(day) && weekdays.contains(weekday)
    }

    /// The instant (seconds since 1970) of a wall-clock minute in the zone: its first occurrence
    /// when a fall-back repeats it, the end of the gap when a spring-forward skips it.
    func instant(ofWallMinute wall: Int) -> Int {
        let naive = wall * 60
        let before = offset(naive - 86_400)
        let after = offset(naive + 86_400)
        let valid = Set([before, offset(naive), after]).map { naive - $0 }.filter { naive - offset($0) == $0 }
        if let first = valid.min() { return first }
        // In a gap: the wall time lies between the transition at `before` and at `after`; the
        // transition's instant is the first whose offset is no longer `before`.
        var low = naive - after
        var high = naive - before
        guard low < high else { return naive - after }
        while high - low > 1 {
            let middle = low + (high - low) / 2
            if offset(middle) == before { low = middle } else { high = middle }
        }
        return high
    }

    func offset(_ second: Int) -> Int {
        timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(second)))
    }

    // MARK: Civil calendar (proleptic Gregorian, exact integer arithmetic)

    static func floorDivide(_ value: Int, _ divisor: Int) -> Int {
        value >= 0 ? value / divisor : -((-value + divisor - 1) / divisor)
    }

    static func floorModulo(_ value: Int, _ divisor: Int) -> Int {
        value - floorDivide(value, divisor) * divisor
    }

    static func isLeap(_ year: Int) -> Bool { year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 of a date (H. Hinnant's days_from_civil).
    static func days(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = floorDivide(y, 400)
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// The date of a day since 1970-01-01 (H. Hinnant's civil_from_days).
    static func civil(fromDays value: Int) -> (year: Int, month: Int, day: Int) {
        let z = value + 719_468
        let era = floorDivide(z, 146_097)
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
