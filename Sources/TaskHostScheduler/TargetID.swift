/// The resource a task acts on: a server, a database, an account, a device.
///
/// Two tasks with equal target ids never run at the same time and start in arrival order.
/// A target id is a string or an integer, as in the input (`"app_android"`, `101`); the two
/// kinds never compare equal (`"101"` and `101` are different targets).
public enum TargetID: Hashable, Sendable {
    case integer(Int64)
    case string(String)
}

extension TargetID: ExpressibleByIntegerLiteral, ExpressibleByStringLiteral {
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(stringLiteral value: String) { self = .string(value) }
}

extension TargetID: CustomStringConvertible {
    public var description: String {
        switch self {
        case .integer(let value): return String(value)
        case .string(let value): return value
        }
    }
}

extension TargetID: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else {
            self = .string(try container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .integer(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        }
    }
}
