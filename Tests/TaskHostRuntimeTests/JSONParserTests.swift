import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostStore
import Testing

@testable import TaskHostRuntime

@Suite struct JSONParserTests {
    @Test("Valid documents parse to the right values")
    func valid() throws {
        let value = try JSONParser.parse(
            #" {"a": [1, -2.5e3, true, false, null], "b\u00e9\n": "x\"y\\z\ud83d\ude00", "c": {}} "#)
        guard case .object(let object) = value else { Issue.record("not an object"); return }
        #expect(object.keys.sorted() == ["a", "bé\n", "c"])
        guard case .array(let items) = object["a"], items.count == 5, case .number(let number) = items[1],
            case .string(let text) = object["bé\n"],
            case .integer(let big) = try JSONParser.parse("9223372036854775807")
        else {
            Issue.record("wrong values: \(value)")
            return
        }
        #expect(number == -2500 && text == "x\"y\\z😀" && big == .max)
    }

    @Test("The span of a top-level member's value is its bytes as written; one-line JSON is told from text")
    func spans() throws {
        let line = #"{"data" : {"b": 1.10,  "a":"\u00e9"} , "x": {"data": 1}, "é": 2}"#
        let (_, span) = try JSONParser.parse(line, spanOf: "data")
        let bytes = Array(line.utf8)
        #expect(span.map { String(decoding: bytes[$0], as: UTF8.self) } == #"{"b": 1.10,  "a":"\u00e9"}"#)
        #expect(try JSONParser.parse(#"{"x": {"data": 1}}"#, spanOf: "data").span == nil)
        #expect(JSONParser.isOneLineJSON(#" {"a": [1, 2]} "#))
        #expect(JSONParser.isOneLineJSON("12345678901234567890123"))
        #expect(JSONParser.isOneLineJSON(#""text""#))
        #expect(!JSONParser.isOneLineJSON("text"))
        #expect(!JSONParser.isOneLineJSON("{\n\"a\": 1\n}"))
        #expect(!JSONParser.isOneLineJSON("1 2"))
        #expect(!JSONParser.isOneLineJSON(""))
    }

    @Test(
        "Invalid documents are refused with the position",
        arguments: [
            (#"{"a": 1"#, "unexpected end of input in an object"),
            (#"{"a" 1}"#, "expected ':' after a key"),
            ("[1, 2,]", "unexpected character ']'"),
            ("01", "unexpected text after the value"),
            ("\"tab\u{09}in string\"", "control character in a string"),
            (#""\ud800""#, "lone surrogate"),
            ("tru", "invalid literal"),
            ("{} {}", "unexpected text after the value"),
            ("-", "invalid number"),
        ])
    func invalid(text: String, message: String) {
        do {
            _ = try JSONParser.parse(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.description.contains(message), "\(error)")
            #expect(error.description.contains("at byte"))
        }
    }
}
