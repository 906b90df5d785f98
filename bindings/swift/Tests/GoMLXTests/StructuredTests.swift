import Foundation
import Testing

@testable import GoMLX

/// Structured output and tool calls (mirrors bindings/go/tools_test.go) on the
/// qwen3_qknorm random-weight fixture with a byte-level tokenizer and Qwen 3's
/// chat template (tests/fixtures/tools/qwen3_bytes); tool_reference.json holds
/// transformers' renders (scripts/text-oracle/make_tool_fixture.py).
@Suite(.serialized)
struct StructuredTests {
    static let dir = Repo.path("tests/fixtures/tools/qwen3_bytes")
    /// The fixture's tool, its parameters in the fixture's key order.
    static let weather = Tool(
        name: "get_weather", description: "Get the weather for a city.",
        parametersJSON: #"{"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris"]}}, "required": ["city"], "additionalProperties": false}"#)

    func reference() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.dir + "/tool_reference.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test func constraints() async throws {
        let model = try await Model.load(Self.dir, options: LoadOptions(device: .cpu))
        defer { model.close() }
        let schema = #"{"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}, "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 2}}, "required": ["n"], "additionalProperties": false}"#
        for seed in UInt64(1)...12 {
            let out = try await model.generate("Answer: ", options: GenerateOptions(maxTokens: 80, temperature: 1, seed: seed, constraint: .jsonSchema(schema))).collect()
            let obj = try #require(try JSONSerialization.jsonObject(with: Data(out.text.utf8)) as? [String: Any], "\(out.text)")
            let n = try #require(obj["n"] as? Int, "\(out.text)")
            #expect((1...9).contains(n))
            #expect(Set(obj.keys).isSubset(of: ["n", "tags"]))
            let tags = (obj["tags"] as? [String]) ?? []
            #expect(tags.count <= 2 && tags.allSatisfy { $0 == "x" || $0 == "y" }, "\(out.text)")
            let choice = try await model.generate("Mood: ", options: GenerateOptions(temperature: 1, seed: seed, constraint: .choice(["happy", "sad"]))).collect()
            #expect(choice.text == "happy" || choice.text == "sad")
            let re = try await model.generate("Code: ", options: GenerateOptions(temperature: 1, seed: seed, constraint: .regex("[0-9]{4}"))).collect()
            #expect(re.text.count == 4 && re.text.allSatisfy(\.isNumber), "\(re.text)")
        }
        #expect(throws: GoMLXError.self) { try model.generate("x", options: GenerateOptions(constraint: .jsonSchema(#"{"type": "strnig"}"#))) }
    }

    @Test func toolCallRoundTrip() async throws {
        let model = try await Model.load(Self.dir, options: LoadOptions(device: .cpu))
        defer { model.close() }
        let ref = try reference()
        let first = [Message.user("Weather in Paris?")]
        #expect(try model.renderChat(first, options: GenerateOptions(tools: [Self.weather])) == ref["first_rendered"] as? String)
        for choice in [ToolChoice.required, .function("get_weather")] {
            let g = try model.chat(first, options: GenerateOptions(maxTokens: 200, temperature: 1, seed: 3, tools: [Self.weather], toolChoice: choice))
            var calls: [ToolCall] = []
            var text = ""
            for try await t in g {
                calls += t.toolCalls
                text += t.text
            }
            #expect(calls == [ToolCall(id: "call_1", name: "get_weather", arguments: #"{"city":"Paris"}"#)])
            #expect(text == "")
            let round = first + [Message(role: "assistant", content: "", toolCalls: calls), .tool(#"{"temperature": 21.5}"#, for: calls[0])]
            #expect(try model.renderChat(round, options: GenerateOptions(tools: [Self.weather])) == ref["round_trip_rendered"] as? String)
            _ = try await model.chat(round, options: GenerateOptions(maxTokens: 4, tools: [Self.weather])).collect()
            let session = try model.makeSession()
            _ = try await session.chat(round, options: GenerateOptions(maxTokens: 4, tools: [Self.weather])).collect()
            session.close()
        }
        #expect(throws: GoMLXError.self) { try model.chat(first, options: GenerateOptions(tools: [Self.weather], toolChoice: .function("nope"))) }
    }

    @Test func classifyChoice() async throws {
        let model = try await Model.load(Self.dir, options: LoadOptions(device: .cpu))
        defer { model.close() }
        let prompts = ["Is it raining? ", "Did you eat? ", "Answer: "]
        let labels = ["yes", "yesterday", "no"]
        let picks = try await model.classifyChoice(prompts, labels: labels)
        #expect(picks.count == 3)
        for (p, pick) in zip(prompts, picks) {
            let text = try await model.generate(p, options: GenerateOptions(constraint: .choice(labels))).collect().text
            #expect(labels.indices.contains(pick) && labels[pick] == text)
        }
    }

    @Test func rawArguments() {
        let text = #"[{"id":"call_1","type":"function","function":{"name":"f","arguments":{"b":"x,}]\"y","a":[1,{"c":2}]}}},{"id":"call_2","type":"function","function":{"name":"g","arguments":{}}}]"#
        #expect(ToolCall.rawArguments(text) == [#"{"b":"x,}]\"y","a":[1,{"c":2}]}"#, "{}"])
    }
}
