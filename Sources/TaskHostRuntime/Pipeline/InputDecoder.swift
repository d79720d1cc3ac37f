import Foundation
import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostScheduler
import TaskHostSources
import TaskHostStore

/// Turns one input line into a pipeline task, or a reason to dead-letter it.
struct InputDecoder: Sendable {
    let source: SourceConfig
    /// Executor names, in pipeline order.
    let executors: [String]
    let maxTaskBytes: Int

    struct Rejection: Error {
        var reason: String
    }

    /// Decodes a line as a source read it; one that is not UTF-8 is refused with the offset of its
    /// first bad byte. `text` is the line as text, for the queue's row: U+FFFD in place of bytes
    /// that are not UTF-8 (the dead letter keeps them: ``deadLetterLine(_:text:source:seq:error:)``).
    func decode(_ input: SourceLine, seq: UInt64, batch: BatchTracker?) -> (
        text: String, result: Result<TaskItem<PipelineTask>, Rejection>
    ) {
        switch input {
        case .text(let text):
            return (text, decode(text, seq: seq, batch: batch))
        case .invalidUTF8(let bytes, _):
            return (
                String(decoding: bytes, as: UTF8.self),
                .failure(Rejection(reason: input.invalidReason ?? "invalid UTF-8"))
            )
        }
    }

    func decode(_ line: String, seq: UInt64, batch: BatchTracker?) -> Result<TaskItem<PipelineTask>, Rejection> {
        if line.utf8.count > maxTaskBytes {
            return .failure(
                Rejection(reason: "the task is \(line.utf8.count) bytes, over maxTaskBytes \(maxTaskBytes)"))
        }
        let value: JSONValue
        let dataSpan: Range<Int>?
        do {
            (value, dataSpan) = try JSONParser.parse(line, spanOf: "data")
        } catch {
            return .failure(Rejection(reason: "malformed JSON: \(error)"))
        }
        guard case .object(let object) = value else {
            return .failure(Rejection(reason: "a task must be a JSON object, got \(value.kind)"))
        }
        guard let targetValue = source.targetId.evaluate(value) else {
            return .failure(Rejection(reason: "no targetId at \(source.targetId.text)"))
        }
        let target: TargetID
        switch targetValue {
        case .string(let text) where !text.isEmpty: target = .string(text)
        case .integer(let number): target = .integer(number)
        case .number(let number) where number == number.rounded() && abs(number) < 9e15:
            target = .integer(Int64(number))
        default:
            return .failure(
                Rejection(
                    reason:
                        "the targetId at \(source.targetId.text) is \(targetValue.kind); expected a non-empty string or an integer"
                ))
        }
        var executor = source.executor
        if let match = source.match {
            let field = match.field.evaluate(value)
            let key: String? =
                switch field {
                case .string(let text): text
                case .integer(let number): String(number)
                case .bigInteger(let text): text
                case .bool(let flag): String(flag)
                default: nil
                }
            if let key, let routed = match.routes[key] {
                executor = routed
            } else if executor == nil {
                return .failure(
                    Rejection(
                        reason:
                            "no route for \(match.field.text) = \(key ?? field?.kind ?? "nothing") and no default executor"
                    ))
            }
        }
        guard let executor, let index = executors.firstIndex(of: executor) else {
            return .failure(Rejection(reason: "no executor"))
        }
        var id: String?
        switch object["id"] {
        case .string(let text): id = text
        case .integer(let number): id = String(number)
        case .bigInteger(let text): id = text
        default: id = nil
        }
        var priority = 0
        if case .integer(let number) = object["priority"] { priority = Int(clamping: number) }
        // The executor receives `data` byte for byte as it came (or the whole input without one).
        let payload: String
        if let dataSpan {
            let utf8 = line.utf8
            let start = utf8.index(utf8.startIndex, offsetBy: dataSpan.lowerBound)
            let end = utf8.index(utf8.startIndex, offsetBy: dataSpan.upperBound)
            payload = String(Substring(utf8[start..<end]))
        } else {
            payload = line
        }
        batch?.added()
        return .success(
            TaskItem(
                targetId: target,
                payload: PipelineTask(
                    source: source.name, seq: seq, executor: index, payload: payload, raw: line, log: AttemptLog(),
                    batch: batch),
                priority: priority, id: id, pool: index + 1))
    }
}
