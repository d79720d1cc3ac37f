// The original design's examples, on the TaskHost scheduler library.
// Run: swift run taskhost-example
import TaskHostScheduler

let clock = ContinuousClock()
let origin = clock.now

func log(_ message: String) {
    let ms = Int((origin.duration(to: clock.now) / .milliseconds(1)).rounded())
    print("[\(String(repeating: " ", count: max(0, 5 - String(ms).count)))\(ms) ms] \(message)")
}

/// A task sequence from a plain array.
struct Tasks<Payload: Sendable>: AsyncSequence, Sendable {
    let items: [TaskItem<Payload>]
    struct AsyncIterator: AsyncIteratorProtocol {
        var base: IndexingIterator<[TaskItem<Payload>]>
        mutating func next() async -> TaskItem<Payload>? { base.next() }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: items.makeIterator()) }
}

// 1. The basic example: targets 1, 2, 1 with a cap of 3. The task of target 2 runs beside the
//    first task of target 1; the second task of target 1 waits for the first.
print("== basic: targets 1, 2, 1; maxConcurrency 3")
let basic = ClosureExecutor<String> { task, _ in
    log("start  target \(task.targetId): \(task.payload)")
    try await Task.sleep(for: .milliseconds(200))
    log("finish target \(task.targetId): \(task.payload)")
}
_ = await run(
    executor: basic,
    tasks: Tasks(items: [
        TaskItem(targetId: 1, payload: "first task of target 1"),
        TaskItem(targetId: 2, payload: "task of target 2"),
        TaskItem(targetId: 1, payload: "second task of target 1"),
    ]),
    maxConcurrency: 3)

// 2. Email: one SMTP connection per mail server; many messages, a cap of 4 connections.
print("\n== email: targetId is the recipient's mail server, maxConcurrency 4")
let email = ClosureExecutor<String> { task, _ in
    log("send \(task.payload) via \(task.targetId)")
    try await Task.sleep(for: .milliseconds(50))
}
let recipients = [
    "ann@mail.example.org", "bob@mail.example.org", "cy@post.example.net", "di@inbox.example.com",
    "ed@mail.example.org", "flo@post.example.net",
]
_ = await run(
    executor: email,
    tasks: Tasks(
        items: recipients.map { TaskItem(targetId: .string(String($0.split(separator: "@")[1])), payload: $0) }),
    maxConcurrency: 4)

// 3. News: fetch articles politely, one request at a time per site; a flaky site is retried.
print("\n== news: one request at a time per site, retries with backoff")
let news = ClosureExecutor<String> { task, context in
    log("fetch \(task.targetId)\(task.payload) (attempt \(context.attempt))")
    try await Task.sleep(for: .milliseconds(30))
    if task.targetId == "flaky.example.com", context.attempt < 3 {
        throw RetryAfterError(after: .milliseconds(40), NewsError.unavailable)
    }
}
enum NewsError: Error { case unavailable }
let newsSummary = await Scheduler(
    executor: news,
    configuration: SchedulerConfiguration(
        maxConcurrency: 8, retry: RetryPolicy(maxAttempts: 3, backoff: .exponential(initial: .milliseconds(20))))
).run(
    Tasks(items: [
        TaskItem(targetId: "daily.example.com", payload: "/politics"),
        TaskItem(targetId: "flaky.example.com", payload: "/sport"),
        TaskItem(targetId: "daily.example.com", payload: "/economy"),
        TaskItem(targetId: "flaky.example.com", payload: "/weather"),
    ]))
print("   news: \(newsSummary.succeeded) succeeded, \(newsSummary.retries) retries")

// 4. Backups: one backup at a time per database; a failing database is parked, the others go on.
print("\n== backups: per-database exclusivity; a broken database is parked")
let backup = ClosureExecutor<String> { task, _ in
    log("backup \(task.targetId) \(task.payload)")
    try await Task.sleep(for: .milliseconds(60))
    if task.targetId == "billing-db" { throw NonRetryableError(BackupError.diskFull) }
}
enum BackupError: Error { case diskFull }
let backupSummary = await Scheduler(
    executor: backup, configuration: SchedulerConfiguration(maxConcurrency: 2, onExhausted: .park)
).run(
    Tasks(items: [
        TaskItem(targetId: "users-db", payload: "full"),
        TaskItem(targetId: "billing-db", payload: "full"),
        TaskItem(targetId: "users-db", payload: "incremental"),
        TaskItem(targetId: "billing-db", payload: "incremental"),
        TaskItem(targetId: "orders-db", payload: "full"),
    ]))
print(
    "   backups: \(backupSummary.succeeded) succeeded, \(backupSummary.parked) parked: "
        + backupSummary.unfinished.map { "\($0.task.targetId) \($0.task.payload)" }.joined(separator: ", "))

// 5. Push notifications: one channel per app, integer targets; with one slot, the waiting app
//    with the higher priority goes first (priority never reorders one app's own messages).
print("\n== push: targetId is the app (integer ids); priority orders the apps' heads")
let push = ClosureExecutor<String> { task, _ in
    log("push to app \(task.targetId) (priority \(task.priority)): \(task.payload)")
    try await Task.sleep(for: .milliseconds(20))
}
_ = await run(
    executor: push,
    tasks: Tasks(items: [
        TaskItem(targetId: 101, payload: "sale starts", priority: 0),
        TaskItem(targetId: 202, payload: "security alert", priority: 10),
        TaskItem(targetId: 101, payload: "sale ends", priority: 0),
    ]),
    maxConcurrency: 1)
