import CGoMLX
import Foundation

// Structured output (constraints) and tool calls (docs/sampling.md, docs/c-api.md).

/// What the output must be (``GenerateOptions/constraint``). A schema or
/// grammar the engine cannot support makes the start throw.
public enum Constraint: Sendable, Hashable {
    /// JSON valid under this JSON Schema, given as JSON text (its key order is kept).
    case jsonSchema(String)
    /// Any JSON object.
    case jsonObject
    /// Text the regular expression (Rust regex syntax) matches as a whole.
    case regex(String)
    /// A sentence of the Lark grammar (llguidance's dialect).
    case lark(String)
    /// Exactly one of the strings.
    case choice([String])

    /// The constraint's JSON form (`gm_generate_options.constraint`).
    var json: String {
        switch self {
        case .jsonSchema(let schema): return "{\"json_schema\": \(schema)}"
        case .jsonObject: return "\"json_object\""
        case .regex(let re): return "{\"regex\": \(jsonString(re))}"
        case .lark(let grammar): return "{\"lark\": \(jsonString(grammar))}"
        case .choice(let options): return "{\"choice\": [\(options.map(jsonString).joined(separator: ", "))]}"
        }
    }
}

/// A function the model may call (OpenAI's `{"type": "function", "function": {...}}`).
public struct Tool: Sendable, Hashable {
    public var name: String
    public var description: String?
    /// The parameters' JSON Schema as JSON text; nil: none.
    public var parametersJSON: String?

    public init(name: String, description: String? = nil, parametersJSON: String? = nil) {
        self.name = name
        self.description = description
        self.parametersJSON = parametersJSON
    }

    var json: String {
        var f = "\"name\": \(jsonString(name))"
        if let description { f += ", \"description\": \(jsonString(description))" }
        if let parametersJSON { f += ", \"parameters\": \(parametersJSON)" }
        return "{\"type\": \"function\", \"function\": {\(f)}}"
    }
}

/// Which tool, if any, the model must call (``GenerateOptions/toolChoice``).
public enum ToolChoice: Sendable, Hashable {
    /// The model decides.
    case auto
    /// No call: the tools are not shown.
    case none
    /// One call of one of the tools, forced by a grammar.
    case required
    /// A call of this function, forced by a grammar.
    case function(String)

    var json: String? {
        switch self {
        case .auto: return nil
        case .none: return "none"
        case .required: return "required"
        case .function(let name): return "{\"type\": \"function\", \"function\": {\"name\": \(jsonString(name))}}"
        }
    }
}

/// A call the model made (``Token/toolCalls``), or one to pass back in an
/// assistant ``Message``.
public struct ToolCall: Sendable, Hashable {
    /// `call_1`, `call_2`, ... within a reply.
    public var id: String
    public var name: String
    /// The arguments, a JSON object as text (as the model wrote it).
    public var arguments: String

    public init(id: String, name: String, arguments: String) {
        self.id = id
        self.name = name
        self.arguments = arguments
    }

    var json: String {
        "{\"id\": \(jsonString(id)), \"type\": \"function\", \"function\": {\"name\": \(jsonString(name)), \"arguments\": \(arguments)}}"
    }

    /// The calls of `gm_token.tool_calls`: `[{"id", "type", "function": {"name", "arguments"}}]`.
    static func parse(_ text: String) throws -> [ToolCall] {
        guard let calls = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] else {
            throw GoMLXError.invalidArgument("tool calls are not a JSON array: \(text)")
        }
        let args = rawArguments(text)
        guard args.count == calls.count else { throw GoMLXError.invalidArgument("tool calls: arguments not found in \(text)") }
        return try zip(calls, args).map { call, arguments in
            guard let id = call["id"] as? String, let f = call["function"] as? [String: Any], let name = f["name"] as? String else {
                throw GoMLXError.invalidArgument("a tool call without an id or a name: \(text)")
            }
            return ToolCall(id: id, name: name, arguments: arguments)
        }
    }

    /// The raw text of each call's `function.arguments` value (depth 3 of the
    /// array), so that its key order survives (Foundation's dictionaries lose it).
    static func rawArguments(_ text: String) -> [String] {
        let b = Array(text.utf8)
        var out: [String] = []
        var depth = 0, i = 0
        var lastKey: String?
        func skipString(_ j: inout Int) -> String {
            let start = j + 1
            j += 1
            while j < b.count && b[j] != UInt8(ascii: "\"") { j += b[j] == UInt8(ascii: "\\") ? 2 : 1 }
            defer { j += 1 }
            return String(decoding: b[start..<min(j, b.count)], as: UTF8.self)
        }
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                lastKey = skipString(&i)
                continue
            }
            if c == UInt8(ascii: ":") && depth == 3 && lastKey == "arguments" {
                // Scan one value: a balanced object/array, a string or a scalar.
                var j = i + 1
                while j < b.count && b[j] == UInt8(ascii: " ") { j += 1 }
                let start = j
                var d = 0
                while j < b.count {
                    let v = b[j]
                    if v == UInt8(ascii: "\"") { _ = skipString(&j); if d == 0 { break }; continue }
                    if v == UInt8(ascii: "{") || v == UInt8(ascii: "[") { d += 1 }
                    if v == UInt8(ascii: "}") || v == UInt8(ascii: "]") {
                        if d == 0 { break }
                        d -= 1
                        if d == 0 { j += 1; break }
                    }
                    if d == 0 && v == UInt8(ascii: ",") { break }
                    j += 1
                }
                out.append(String(decoding: b[start..<j], as: UTF8.self))
                i = j
                lastKey = nil
                continue
            }
            if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") { depth += 1 }
            if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") { depth -= 1 }
            i += 1
        }
        return out
    }
}

/// `s` as a JSON string literal.
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}

extension Message {
    /// Whether the message needs the JSON entry points (more than a role and content).
    var needsJSON: Bool { !toolCalls.isEmpty || toolCallID != nil || name != nil }

    var json: String {
        var m = "{\"role\": \(jsonString(role)), \"content\": \(jsonString(content))"
        if !toolCalls.isEmpty { m += ", \"tool_calls\": [\(toolCalls.map(\.json).joined(separator: ", "))]" }
        if let toolCallID { m += ", \"tool_call_id\": \(jsonString(toolCallID))" }
        if let name { m += ", \"name\": \(jsonString(name))" }
        return m + "}"
    }
}

func messagesJSON(_ messages: [Message]) -> String { "[" + messages.map(\.json).joined(separator: ", ") + "]" }

extension Model {
    /// The prompt ``chat(_:options:)`` starts from: `messages` rendered with the
    /// model's chat template and the options' tools and template arguments.
    public func renderChat(_ messages: [Message], options: GenerateOptions = GenerateOptions()) throws -> String {
        try handle.use { h in
            let arena = CArena()
            var o = try options.c(arena)
            let msgs = try arena.string(messagesJSON(messages), "messages")
            return try withExtendedLifetime(arena) {
                try withUnsafePointer(to: &o) { op in
                    let n = gm_chat_render_json(h, msgs, op, nil, 0)
                    guard n >= 0 else { throw lastError("gm_chat_render_json") }
                    var buf = [CChar](repeating: 0, count: Int(n) + 1)
                    let again = gm_chat_render_json(h, msgs, op, &buf, buf.count)
                    guard again == n else { throw lastError("gm_chat_render_json") }
                    return String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                }
            }
        }
    }

    /// Answers each prompt with one of `labels`, generated whole under a choice
    /// constraint (greedy unless the options sample): unlike ``classify(_:options:)``
    /// with labels, they may share their first tokens. Each prompt's label index.
    public func classifyChoice(_ prompts: [String], labels: [String], options: GenerateOptions = GenerateOptions()) async throws -> [Int] {
        try Task.checkCancellation()
        return try await onOwnThread("gomlx.classify") { [handle] in
            try handle.use { h in
                let arena = CArena()
                var o = try options.c(arena)
                var picks = [Int32](repeating: -1, count: prompts.count)
                let rc = try withExtendedLifetime(arena) {
                    try withUnsafePointer(to: &o) { op in
                        gm_classify_choice(h, try arena.strings(prompts, "prompts"), prompts.count, try arena.strings(labels, "labels"), labels.count,
                                           op, &picks, nil)
                    }
                }
                guard rc == GM_OK else { throw lastError("gm_classify_choice") }
                return picks.map(Int.init)
            }
        }
    }
}
