import Testing

@testable import TaskHostScheduler

@Suite struct RetryPolicyTests {
    @Test func fixedBackoff() {
        let policy = RetryPolicy(maxAttempts: 5, backoff: .fixed(.seconds(2)))
        #expect((1...4).map { policy.delay(beforeRetry: $0, random: 0.7) } == Array(repeating: .seconds(2), count: 4))
    }

    @Test func linearBackoff() {
        let policy = RetryPolicy(maxAttempts: 5, backoff: .linear(initial: .seconds(1), step: .milliseconds(500)))
        #expect(
            (1...4).map { policy.delay(beforeRetry: $0, random: 0) } == [
                .seconds(1), .milliseconds(1500), .seconds(2), .milliseconds(2500),
            ])
    }

    @Test func exponentialBackoffIsCappedByMaxDelay() {
        let policy = RetryPolicy(
            maxAttempts: 100, backoff: .exponential(initial: .milliseconds(100), multiplier: 3), maxDelay: .seconds(2))
        #expect(
            (1...5).map { policy.delay(beforeRetry: $0, random: 0) } == [
                .milliseconds(100), .milliseconds(300), .milliseconds(900), .seconds(2), .seconds(2),
            ])
        #expect(policy.delay(beforeRetry: 10_000, random: 0) == .seconds(2))
    }

    @Test func jitterDrawsWithinTheFraction() {
        let policy = RetryPolicy(maxAttempts: 3, backoff: .fixed(.seconds(10)), jitter: 0.5)
        #expect(policy.delay(beforeRetry: 1, random: 0) == .seconds(10))
        #expect(policy.delay(beforeRetry: 1, random: 0.5) == .milliseconds(7500))
        #expect(policy.delay(beforeRetry: 1, random: 0.999_999) > .seconds(5))
        let full = RetryPolicy(maxAttempts: 3, backoff: .fixed(.seconds(10)), jitter: 1)
        #expect(full.delay(beforeRetry: 1, random: 0.25) == .milliseconds(7500))
    }

    @Test func targetIdsOfBothKinds() {
        let a: TargetID = "101"
        let b: TargetID = 101
        #expect(a != b)
        #expect(a.description == b.description)
        #expect(Set<TargetID>(["x", "x", 1, 1]).count == 2)
    }
}
