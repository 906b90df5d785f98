import CGoMLX
import Foundation

/// A chat message. An assistant message may carry the calls it made
/// (``toolCalls``, as ``Token/toolCalls`` hands them out); a "tool" message
/// the result of one (``toolCallID`` and ``name`` of the call, the result in ``content``).
public struct Message: Sendable, Hashable {
    /// "system", "user", "assistant", "tool", or any role the model's template knows.
    public var role: String
    public var content: String
    public var toolCalls: [ToolCall]
    public var toolCallID: String?
    public var name: String?

    public init(role: String, content: String, toolCalls: [ToolCall] = [], toolCallID: String? = nil, name: String? = nil) {
        self.role = role
        self.content = content
        self.toolCalls = toolCalls
        self.toolCallID = toolCallID
        self.name = name
    }

    /// A tool's result for the call `call`.
    public static func tool(_ content: String, for call: ToolCall) -> Message {
        Message(role: "tool", content: content, toolCallID: call.id, name: call.name)
    }

    public static func system(_ content: String) -> Message { Message(role: "system", content: content) }
    public static func user(_ content: String) -> Message { Message(role: "user", content: content) }
    public static func assistant(_ content: String) -> Message { Message(role: "assistant", content: content) }
}

/// What a model is.
public struct ModelInfo: Sendable, Hashable {
    /// "llama", "qwen2", "qwen3", "gemma3_text", "mistral", ...
    public let architecture: String
    public let vocabSize: Int
    public let numLayers: Int
    public let hiddenSize: Int
    public let numHeads: Int
    public let numKVHeads: Int
    public let headDim: Int
    /// The longest sequence a request may reach (the load option, else the model's).
    public let contextLength: Int
    /// The window of local-attention layers, when the model has them.
    public let slidingWindow: Int?
    /// The compute dtype ("float32", "bfloat16", ...).
    public let dtype: String
    /// The quantisation of the weights, when they are quantised.
    public let quantization: Quantization?
    public let parameters: Int
    public let weightBytes: Int
    /// ``Device/cpu`` or ``Device/gpu``.
    public let device: Device
    /// Text prompts, chat and labels need a tokenizer; token-id prompts do not.
    public let hasTokenizer: Bool

    init(_ i: gm_info) {
        architecture = String(cString: i.architecture)
        vocabSize = i.vocab_size
        numLayers = i.num_layers
        hiddenSize = i.hidden_size
        numHeads = i.num_heads
        numKVHeads = i.num_kv_heads
        headDim = i.head_dim
        contextLength = i.context_length
        slidingWindow = i.sliding_window == 0 ? nil : i.sliding_window
        dtype = String(cString: i.dtype)
        quantization = i.quant_bits == 0 ? nil : Quantization(bits: Int(i.quant_bits), groupSize: Int(i.quant_group_size))
        parameters = Int(i.parameters)
        weightBytes = Int(i.weight_bytes)
        device = String(cString: i.device) == "gpu" ? .gpu : .cpu
        hasTokenizer = i.has_tokenizer
    }
}

/// Quantised weights: `bits` per weight, one scale and bias per `groupSize` weights.
public struct Quantization: Sendable, Hashable {
    public let bits: Int
    public let groupSize: Int
}

/// A loaded model.
///
/// A model runs on an engine thread of its own; use it from any number of
/// tasks at once: their generations are batched together step by step.
/// ``close()`` frees the weights at once (and ends running generations with
/// an error); otherwise they are freed when the last reference to the model,
/// its generations and its chat sessions goes away.
///
/// ```swift
/// let model = try await Model.load("SmolLM2-135M-Instruct.Q4_1.gguf")
/// for try await token in try model.chat([.user("What is the capital of France?")]) {
///     print(token.text, terminator: "")
/// }
/// ```
public final class Model: Sendable {
    /// What the model is.
    public let info: ModelInfo
    /// The path it was loaded from.
    public let path: String
    let handle: SharedHandle

    /// Loads a model directory (config.json + safetensors) or a `.gguf` file.
    /// Blocks the calling thread while the weights load; from a task, prefer
    /// ``load(_:options:)``.
    public init(path: String, options: LoadOptions = LoadOptions()) throws {
        let arena = CArena()
        let cPath = try arena.string(path, "path")
        let h = try withExtendedLifetime(arena) {
            try options.withC { o in
                guard let h = gm_model_load(cPath, o) else { throw lastError("gm_model_load") }
                return h
            }
        }
        var i = gm_info()
        i.struct_size = MemoryLayout<gm_info>.size
        guard gm_model_info(h, &i) == GM_OK else {
            let error = lastError("gm_model_info")
            gm_model_close(h)
            throw error
        }
        info = ModelInfo(i)
        self.path = path
        handle = SharedHandle(h) { gm_model_close($0) }
    }

    /// Loads a model on a thread of its own, so the calling task's thread
    /// is not blocked while the weights load.
    public static func load(_ path: String, options: LoadOptions = LoadOptions()) async throws -> Model {
        try Task.checkCancellation()
        return try await onOwnThread("gomlx.load") { try Model(path: path, options: options) }
    }

    deinit { handle.close() }

    /// Frees the weights now: running generations end with an error ("the
    /// model was closed"), a running classify or batch call is waited for,
    /// and later calls throw ``GoMLXError/closed``. Idempotent.
    public func close() { handle.close() }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { handle.isClosed }

    // MARK: Generation

    /// Starts a continuation of `prompt` (encoded with the model's tokenizer,
    /// with the special tokens it declares). Throws when the generation cannot
    /// start (no tokenizer, bad options, a cancelled task, a closed model);
    /// the returned sequence throws what goes wrong later.
    public func generate(_ prompt: String, options: GenerateOptions = GenerateOptions()) throws -> Generation {
        try start("gm_generate_start", options) { h, arena, o in
            gm_generate_start(h, try arena.string(prompt, "prompt"), o)
        }
    }

    /// Starts a continuation of a prompt given as token ids; works without a
    /// tokenizer (the tokens' text is then empty and end-of-sequence is not detected).
    public func generate(tokens: [UInt32], options: GenerateOptions = GenerateOptions()) throws -> Generation {
        try start("gm_generate_tokens_start", options) { h, arena, o in
            gm_generate_tokens_start(h, arena.array(tokens), tokens.count, o)
        }
    }

    /// Starts the assistant's reply to `messages`, rendered with the model's
    /// own chat template (and ``GenerateOptions/chatTemplateArguments``).
    public func chat(_ messages: [Message], options: GenerateOptions = GenerateOptions()) throws -> Generation {
        if messages.contains(where: \.needsJSON) {
            return try start("gm_chat_start_json", options) { h, arena, o in
                gm_chat_start_json(h, try arena.string(messagesJSON(messages), "messages"), o)
            }
        }
        return try start("gm_chat_start", options) { h, arena, o in
            gm_chat_start(h, try cMessages(messages, arena), messages.count, o)
        }
    }

    /// A chat session: the engine keeps its KV cache between turns.
    public func makeSession() throws -> ChatSession {
        let s = try handle.use { h in
            guard let s = gm_session_new(h) else { throw lastError("gm_session_new") }
            return s
        }
        return ChatSession(s, model: self)
    }

    private func start(_ function: String, _ options: GenerateOptions,
                       _ call: (OpaquePointer, CArena, UnsafePointer<gm_generate_options>) throws -> OpaquePointer?) throws -> Generation {
        try Task.checkCancellation()
        let g = try handle.use { h in
            let arena = CArena()
            var o = try options.c(arena)
            return try withExtendedLifetime(arena) {
                guard let g = try withUnsafePointer(to: &o, { try call(h, arena, $0) }) else { throw lastError(function) }
                return g
            }
        }
        return Generation(g, keepAlive: self)
    }

    // MARK: Classify and batches

    /// Classifies each prompt by its next token, in batched prefills (no
    /// decoding), optionally restricted to ``ClassifyOptions/labels``.
    ///
    /// ```swift
    /// let answers = try await model.classify(["The capital of France is"],
    ///                                         options: ClassifyOptions(labels: [" Paris", " London"]))
    /// print(answers[0].label, answers[0].labelProbabilities, answers.metrics.promptsPerSecond)
    /// ```
    ///
    /// Runs on a thread of its own; not interrupted by task cancellation once started.
    public func classify(_ prompts: [String], options: ClassifyOptions = ClassifyOptions()) async throws -> Classification {
        try await classifyCall("gm_classify", options) { h, arena, o, r, m in
            gm_classify(h, try arena.strings(prompts, "prompts"), prompts.count, o, r, m)
        }
    }

    /// Classifies prompts given as token ids; works without a tokenizer (the
    /// answers' text is then empty). With ``ClassifyOptions/logits`` each
    /// result carries the full last-position logits.
    public func classify(tokens prompts: [[UInt32]], options: ClassifyOptions = ClassifyOptions()) async throws -> Classification {
        try await classifyCall("gm_classify_tokens", options) { h, arena, o, r, m in
            let (ids, lens) = arena.prompts(prompts)
            return gm_classify_tokens(h, ids, lens, prompts.count, o, r, m)
        }
    }

    /// Generates for several prompts together (a left-padded batch; rows
    /// leave as they finish), as a collection of outputs in prompt order.
    public func batchGenerate(_ prompts: [String], options: GenerateOptions = GenerateOptions()) async throws -> BatchGeneration {
        try await batchCall(options) { h, arena, o, r, m in
            gm_batch_generate(h, try arena.strings(prompts, "prompts"), prompts.count, o, r, m)
        }
    }

    /// ``batchGenerate(_:options:)`` with prompts given as token ids.
    public func batchGenerate(tokens prompts: [[UInt32]], options: GenerateOptions = GenerateOptions()) async throws -> BatchGeneration {
        try await batchCall(options) { h, arena, o, r, m in
            let (ids, lens) = arena.prompts(prompts)
            return gm_batch_generate_tokens(h, ids, lens, prompts.count, o, r, m)
        }
    }

    private typealias ClassifyCall = @Sendable (OpaquePointer, CArena, UnsafePointer<gm_classify_options>,
                                                UnsafeMutablePointer<gm_classify_result>,
                                                UnsafeMutablePointer<gm_batch_metrics>) throws -> Int32

    private func classifyCall(_ function: String, _ options: ClassifyOptions, _ call: @escaping ClassifyCall) async throws -> Classification {
        try Task.checkCancellation()
        return try await onOwnThread("gomlx.classify") { [handle] in
            try handle.use { h in
                let arena = CArena()
                var o = try options.c(arena)
                var r = gm_classify_result()
                r.struct_size = MemoryLayout<gm_classify_result>.size
                var m = gm_batch_metrics()
                m.struct_size = MemoryLayout<gm_batch_metrics>.size
                let rc = try withExtendedLifetime(arena) { try withUnsafePointer(to: &o) { try call(h, arena, $0, &r, &m) } }
                guard rc == GM_OK else { throw lastError(function) }
                defer { gm_classify_result_free(&r) }
                return Classification(r, BatchMetrics(m))
            }
        }
    }

    private typealias BatchCall = @Sendable (OpaquePointer, CArena, UnsafePointer<gm_generate_options>,
                                             UnsafeMutablePointer<gm_batch_result>,
                                             UnsafeMutablePointer<gm_batch_metrics>) throws -> Int32

    private func batchCall(_ options: GenerateOptions, _ call: @escaping BatchCall) async throws -> BatchGeneration {
        try Task.checkCancellation()
        return try await onOwnThread("gomlx.batch") { [handle] in
            try handle.use { h in
                let arena = CArena()
                var o = try options.c(arena)
                var r = gm_batch_result()
                r.struct_size = MemoryLayout<gm_batch_result>.size
                var m = gm_batch_metrics()
                m.struct_size = MemoryLayout<gm_batch_metrics>.size
                let rc = try withExtendedLifetime(arena) { try withUnsafePointer(to: &o) { try call(h, arena, $0, &r, &m) } }
                guard rc == GM_OK else { throw lastError("gm_batch_generate") }
                defer { gm_batch_result_free(&r) }
                return BatchGeneration(r, BatchMetrics(m))
            }
        }
    }

    // MARK: Discovery

    /// Finds models at or below `directory`, sorted by path: directories
    /// (config.json of a supported architecture plus safetensors weights) and
    /// `.gguf` files (``DiscoveredModel/supported`` says whether gomlx loads them).
    public static func discover(in directory: String) throws -> [DiscoveredModel] {
        let arena = CArena()
        let dir = try arena.string(directory, "directory")
        var r = gm_discover_result()
        r.struct_size = MemoryLayout<gm_discover_result>.size
        guard withExtendedLifetime(arena, { gm_discover(dir, &r) }) == GM_OK else { throw lastError("gm_discover") }
        defer { gm_discover_result_free(&r) }
        return (0..<r.n).map { i in
            DiscoveredModel(
                path: String(cString: r.paths[i]!), architecture: String(cString: r.architectures[i]!),
                quantization: r.quant_bits[i] == 0 ? nil
                    : Quantization(bits: Int(r.quant_bits[i]), groupSize: Int(r.quant_group_sizes[i])),
                format: String(cString: r.formats[i]!), supported: r.supported[i], sizeBytes: Int(r.size_bytes[i]))
        }
    }
}

/// A model that ``Model/discover(in:)`` found.
public struct DiscoveredModel: Sendable, Hashable {
    /// A model directory or a `.gguf` file.
    public let path: String
    public let architecture: String
    public let quantization: Quantization?
    /// "safetensors" (a directory) or "gguf".
    public let format: String
    /// Whether gomlx loads the architecture.
    public let supported: Bool
    /// Bytes of the weight files.
    public let sizeBytes: Int
}

/// A chat session: pass the whole conversation each turn (earlier messages,
/// the assistant's replies, the new message); the engine reuses the KV cache
/// of the prefix it shares with the previous turn, so each turn evaluates
/// only the new tokens. One generation at a time per session.
///
/// ```swift
/// let session = try model.makeSession()
/// var conversation: [Message] = [.user("What is the capital of France?")]
/// let reply = try await session.chat(conversation).collect().text
/// conversation += [.assistant(reply), .user("And of Italy?")]
/// ```
public final class ChatSession: Sendable {
    /// The model the session belongs to (kept alive by the session).
    public let model: Model
    let handle: SharedHandle

    init(_ s: OpaquePointer, model: Model) {
        self.model = model
        handle = SharedHandle(s) { gm_session_free($0) }
    }

    deinit { handle.close() }

    /// Starts the assistant's reply to the conversation `messages`.
    public func chat(_ messages: [Message], options: GenerateOptions = GenerateOptions()) throws -> Generation {
        try Task.checkCancellation()
        let g = try handle.use { s in
            let arena = CArena()
            var o = try options.c(arena)
            if messages.contains(where: \.needsJSON) {
                let json = try arena.string(messagesJSON(messages), "messages")
                return try withExtendedLifetime(arena) {
                    guard let g = withUnsafePointer(to: &o, { gm_session_chat_start_json(s, json, $0) }) else {
                        throw lastError("gm_session_chat_start_json")
                    }
                    return g
                }
            }
            let msgs = try cMessages(messages, arena)
            return try withExtendedLifetime(arena) {
                guard let g = withUnsafePointer(to: &o, { gm_session_chat_start(s, msgs, messages.count, $0) }) else {
                    throw lastError("gm_session_chat_start")
                }
                return g
            }
        }
        return Generation(g, keepAlive: self)
    }

    /// Frees the session's cache (a running generation goes on until it
    /// ends); later calls throw ``GoMLXError/closed``. Idempotent.
    public func close() { handle.close() }
}

func cMessages(_ messages: [Message], _ arena: CArena) throws -> UnsafePointer<gm_message>? {
    let c = try messages.enumerated().map { i, m in
        gm_message(role: try arena.string(m.role, "messages[\(i)].role"),
                   content: try arena.string(m.content, "messages[\(i)].content"))
    }
    return arena.array(c)
}
