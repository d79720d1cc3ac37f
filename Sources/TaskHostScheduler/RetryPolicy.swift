/// How a failed attempt is retried: how many attempts in all, and how long to wait between them.
public struct RetryPolicy: Sendable, Hashable {
    /// The shape of the delay between attempts.
    public enum Backoff: Sendable, Hashable {
        /// Always `delay`.
        case fixed(Duration)
        /// `initial + step * (retry - 1)`.
        case linear(initial: Duration, step: Duration)
        /// `initial * multiplier^(retry - 1)`.
        case exponential(initial: Duration, multiplier: Double = 2)
    }

    /// Attempts in all, the first one included (1 means never retry).
    public var maxAttempts: Int
    public var backoff: Backoff
    /// No delay is ever longer than this.
    public var maxDelay: Duration
    /// The fraction (0...1) of each delay that is randomized: the delay is drawn uniformly from
    /// `[delay * (1 - jitter), delay]`. 1 is "full jitter", 0 is none.
    public var jitter: Double

    public init(
        maxAttempts: Int = 3,
        backoff: Backoff = .exponential(initial: .milliseconds(100)),
        maxDelay: Duration = .seconds(60),
        jitter: Double = 0
    ) {
        precondition(maxAttempts >= 1, "maxAttempts must be at least 1")
        precondition((0...1).contains(jitter), "jitter must be within 0...1")
        self.maxAttempts = maxAttempts
        self.backoff = backoff
        self.maxDelay = maxDelay
        self.jitter = jitter
    }

    /// One attempt, no retry.
    public static let none = RetryPolicy(maxAttempts: 1, backoff: .fixed(.zero))

    /// The delay before retry number `retry` (1 for the delay after the first failed attempt).
    /// - Parameter random: a number in `0..<1` used for jitter.
    public func delay(beforeRetry retry: Int, random: Double) -> Duration {
        let retry = max(1, retry)
        var base: Duration
        switch backoff {
        case .fixed(let delay):
            base = delay
        case .linear(let initial, let step):
            base = initial + step * (retry - 1)
        case .exponential(let initial, let multiplier):
            // Cap the exponent so that the product stays finite; maxDelay clamps the result anyway.
            let factor = power(multiplier, Double(min(retry - 1, 512)))
            let seconds = initial.secondsDouble * factor
            base = seconds.isFinite && seconds < maxDelay.secondsDouble ? .secondsDouble(seconds) : maxDelay
        }
        if base > maxDelay { base = maxDelay }
        if base < .zero { base = .zero }
        if jitter > 0 {
            let scaled = base.secondsDouble * (1 - jitter * random)
            base = .secondsDouble(max(0, scaled))
        }
        return base
    }
}

// Small helpers so that the scheduler does not need Foundation.
@inline(__always)
func power(_ base: Double, _ exponent: Double) -> Double {
    var result = 1.0
    var b = base
    var e = Int(exponent)
    while e > 0 {
        if e & 1 == 1 { result *= b }
        b *= b
        e >>= 1
        if !result.isFinite { return .infinity }
    }
    return result
}

extension Duration {
    var secondsDouble: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    static func secondsDouble(_ value: Double) -> Duration {
        .nanoseconds(Int64((value * 1e9).rounded()))
    }
}
