import TaskHostConfig
import TaskHostJSON
import TaskHostPlugins
import TaskHostStore
import Testing

@testable import TaskHostRuntime

@Suite struct JSONParserTests {
    @Test("Valid documents parse to the right values and serialize back")
    func valid() throws {
        let value = try JSONParser.parse(
            #" {"a": [1, -2.5e3, true, false, null], "b\u00e9\n": "x\"y\\z\ud83d\ude00", "c": {}} "#)
        guard case .object(let object) = value else { Issue.record("not an object"); return }
        #expect(object.keys.sorted() == ["a", "bé\n", "c"])
        #expect(value.serialized == #"{"a":[1,-2500.0,true,false,null],"bé\n":"x\"y\\z😀","c":{}}"#)
        #expect(try JSONParser.parse("9223372036854775807").serialized == "9223372036854775807")
        #expect(try JSONParser.parse("0.5").serialized == "0.5")
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
