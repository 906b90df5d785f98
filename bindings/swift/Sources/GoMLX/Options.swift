import CGoMLX
import Foundation

/// Where a model runs.
public enum Device: String, Sendable, Hashable, CaseIterable {
    /// The GPU where MLX has one (Metal on Apple silicon, CUDA), else the CPU.
    case automatic
    case cpu
    case gpu

    var cValue: Int32 {
        switch self {
        case .automatic: GM_DEVICE_DEFAULT
        case .cpu: GM_DEVICE_CPU
        case .gpu: GM_DEVICE_GPU
        }
    }
}

/// A compute dtype for a model's weights and activations.
///
/// The library also accepts the short spellings (`"f32"`, `"f16"`, `"bf16"`);
/// a name it does not know fails the load with its message.
public struct DType: RawRepresentable, Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { rawValue = value }
    public var description: String { rawValue }

    public static let float32: DType = "float32"
    public static let float16: DType = "float16"
    public static let bfloat16: DType = "bfloat16"
}

/// How to load a model. Every property has a default: `LoadOptions()` loads
/// the checkpoint as it is, on the GPU where there is one.
public struct LoadOptions: Sendable, Hashable {
    /// Where the model runs.
    public var device: Device
    /// The compute dtype; nil keeps the checkpoint's.
    public var dtype: DType?
    /// The longest sequence a request may reach (prompt + output); nil: the model's.
    public var contextLength: Int?
    /// When set, MLX's process-wide memory limit in bytes, applied before loading.
    public var memoryLimit: Int?
    /// When set, MLX's process-wide buffer-cache limit in bytes, applied before loading.
    public var cacheLimit: Int?
    /// A LoRA adapter directory in mlx-lm's layout (`adapters.safetensors` +
    /// `adapter_config.json`, as ``LoRA/train(model:data:options:progress:)``,
    /// `gomlx lora` and `mlx_lm.lora` write it) applied at load. An adapter that
    /// does not fit the model fails the load with a message naming what does not fit.
    public var adapterPath: String?
    /// The device-strategy knobs (docs/tuning.md).
    public var tuning: Tuning
    /// Most generations decoding in one batch (continuous batching); nil: 64 on a GPU, 32 on the CPU.
    public var maxBatch: Int?
    /// Bytes of KV the prefix cache keeps from finished requests, so requests
    /// sharing a prompt prefix skip its prefill; nil: off.
    public var prefixCacheBytes: Int?
    /// Replicas (data parallel): whole copies of the model serving this handle's
    /// requests by least outstanding work; on a GPU replica i runs on device i. nil: 1.
    public var replicas: Int?
    /// Split the model over the ranks of an MLX distributed group (tensor parallel,
    /// docs/distributed.md): "ring", "nccl", "mpi", "jaccl" or "any"; "off" = not
    /// split; nil = `GOMLX_DISTRIBUTED` (set by `gomlx launch`). A rank above 0
    /// calls ``Model/follow(path:options:)`` instead of loading.
    public var distributed: String?
    /// How a split model's mixture-of-experts blocks are split: "columns" of every
    /// expert (compute and memory divide) or whole "experts" per rank; nil =
    /// `GOMLX_MOE_SPLIT`, else columns where they divide.
    public var moeSplit: String?

    public init(device: Device = .automatic, dtype: DType? = nil, contextLength: Int? = nil,
                memoryLimit: Int? = nil, cacheLimit: Int? = nil, adapterPath: String? = nil,
                tuning: Tuning = Tuning(), maxBatch: Int? = nil, prefixCacheBytes: Int? = nil,
                replicas: Int? = nil, distributed: String? = nil, moeSplit: String? = nil) {
        self.device = device
        self.dtype = dtype
        self.contextLength = contextLength
        self.memoryLimit = memoryLimit
        self.cacheLimit = cacheLimit
        self.adapterPath = adapterPath
        self.tuning = tuning
        self.maxBatch = maxBatch
        self.prefixCacheBytes = prefixCacheBytes
        self.replicas = replicas
        self.distributed = distributed
        self.moeSplit = moeSplit
    }

    func withC<R>(_ body: (UnsafePointer<gm_load_options>) throws -> R) throws -> R {
        let arena = CArena()
        var o = gm_load_options()
        o.struct_size = MemoryLayout<gm_load_options>.size
        o.device = device.cValue
        o.dtype = try arena.optionalString(dtype?.rawValue, "dtype")
        o.context_length = try size(contextLength, "contextLength")
        o.memory_limit = try size(memoryLimit, "memoryLimit")
        o.cache_limit = try size(cacheLimit, "cacheLimit")
        o.adapter_path = try arena.optionalString(adapterPath, "adapterPath")
        try tuning.apply(&o)
        o.max_batch = try size(maxBatch, "maxBatch")
        o.prefix_cache_bytes = try size(prefixCacheBytes, "prefixCacheBytes")
        o.replicas = try size(replicas, "replicas")
        o.distributed = try arena.optionalString(distributed, "distributed")
        o.moe_split = try arena.optionalString(moeSplit, "moeSplit")
        return try withExtendedLifetime(arena) { try withUnsafePointer(to: &o) { try body($0) } }
    }
}

/// How to generate. `GenerateOptions()` is greedy decoding of up to 256
/// tokens; every other property is off until set.
///
/// ```swift
/// var options = GenerateOptions(maxTokens: 64)
/// options.temperature = 0.7
/// options.stop = ["\n\n"]
/// ```
public struct GenerateOptions: Sendable, Hashable {
    /// The most tokens to generate; nil (or 0): 256.
    public var maxTokens: Int?
    /// Softmax temperature; 0 is greedy (arg-max) decoding.
    public var temperature: Float
    /// Keep only the k most likely tokens.
    public var topK: Int?
    /// Nucleus sampling mass in (0, 1].
    public var topP: Float?
    /// Min-p filter in [0, 1].
    public var minP: Float?
    /// Repetition penalty (> 0; 1 is none).
    public var repetitionPenalty: Float?
    /// The tokens the repetition penalty looks back over; nil: 20.
    public var repetitionContextSize: Int?
    /// OpenAI-style presence penalty.
    public var presencePenalty: Float?
    /// OpenAI-style frequency penalty.
    public var frequencyPenalty: Float?
    /// The sampler's seed; nil seeds it from the clock.
    public var seed: UInt64?
    /// Report each token's log-probability in ``Token/logprob``.
    public var logprobs: Bool
    /// Also report this many most likely alternatives (``Token/topLogprobs``; needs `logprobs`).
    public var topLogprobs: Int
    /// Strings that end the generation; they are not part of the output.
    public var stop: [String]
    /// Keep generating past end-of-sequence tokens.
    public var ignoreEOS: Bool
    /// Prompt tokens evaluated per prefill step; nil: 512.
    public var prefillChunk: Int?
    /// Additive biases on token logits (`-.infinity` bans a token).
    public var logitBias: [UInt32: Float]
    /// Chat only: extra variables for the model's chat template, e.g.
    /// `["enable_thinking": false]`.
    public var chatTemplateArguments: [String: TemplateValue]
    /// What the output must be (JSON Schema, JSON object, regex, Lark grammar, choice); nil: free.
    public var constraint: Constraint?
    /// Chat only: functions shown to the model's chat template; the reply's
    /// calls come back parsed in ``Token/toolCalls``.
    public var tools: [Tool]
    /// Chat only: whether the model must call a tool.
    public var toolChoice: ToolChoice

    public init(maxTokens: Int? = nil, temperature: Float = 0, topK: Int? = nil, topP: Float? = nil,
                minP: Float? = nil, repetitionPenalty: Float? = nil, repetitionContextSize: Int? = nil,
                presencePenalty: Float? = nil, frequencyPenalty: Float? = nil, seed: UInt64? = nil,
                logprobs: Bool = false, topLogprobs: Int = 0, stop: [String] = [], ignoreEOS: Bool = false,
                prefillChunk: Int? = nil, logitBias: [UInt32: Float] = [:],
                chatTemplateArguments: [String: TemplateValue] = [:], constraint: Constraint? = nil, tools: [Tool] = [],
                toolChoice: ToolChoice = .auto) {
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.repetitionContextSize = repetitionContextSize
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.seed = seed
        self.logprobs = logprobs
        self.topLogprobs = topLogprobs
        self.stop = stop
        self.ignoreEOS = ignoreEOS
        self.prefillChunk = prefillChunk
        self.logitBias = logitBias
        self.chatTemplateArguments = chatTemplateArguments
        self.constraint = constraint
        self.tools = tools
        self.toolChoice = toolChoice
    }

    /// The C options, in memory that `arena` owns.
    func c(_ arena: CArena) throws -> gm_generate_options {
        var o = gm_generate_options()
        o.struct_size = MemoryLayout<gm_generate_options>.size
        o.max_tokens = try size(maxTokens, "maxTokens")
        o.temperature = temperature
        o.top_k = try size(topK, "topK")
        o.top_p = topP ?? 0
        o.min_p = minP ?? 0
        o.repetition_penalty = repetitionPenalty ?? 0
        o.repetition_context_size = try size(repetitionContextSize, "repetitionContextSize")
        o.presence_penalty = presencePenalty ?? 0
        o.frequency_penalty = frequencyPenalty ?? 0
        if let seed {
            o.seed = seed
            o.has_seed = true
        }
        o.logprobs = logprobs
        o.top_logprobs = try size(topLogprobs, "topLogprobs")
        o.stop = try arena.strings(stop, "stop")
        o.n_stop = stop.count
        o.ignore_eos = ignoreEOS
        o.prefill_chunk = try size(prefillChunk, "prefillChunk")
        let biases = logitBias.sorted { $0.key < $1.key }.map { gm_logit_bias(token: $0.key, bias: $0.value) }
        o.logit_bias = arena.array(biases)
        o.n_logit_bias = biases.count
        if !chatTemplateArguments.isEmpty {
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let json: Data
            do {
                json = try encoder.encode(chatTemplateArguments)
            } catch {
                throw GoMLXError.invalidArgument("chatTemplateArguments are not valid JSON: \(error)")
            }
            o.chat_template_args = try arena.string(String(decoding: json, as: UTF8.self), "chatTemplateArguments")
        }
        if let constraint { o.constraint = try arena.string(constraint.json, "constraint") }
        if !tools.isEmpty { o.tools = try arena.string("[" + tools.map(\.json).joined(separator: ", ") + "]", "tools") }
        if let choice = toolChoice.json { o.tool_choice = try arena.string(choice, "toolChoice") }
        return o
    }
}

/// A JSON value for ``GenerateOptions/chatTemplateArguments``, written with
/// literals: `["enable_thinking": false, "tools": ["search"]]`.
public enum TemplateValue: Sendable, Hashable, Encodable, ExpressibleByNilLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    case null
    case bool(Bool)
    case int(Int)
    /// A finite number (NaN and infinities are not JSON).
    case double(Double)
    case string(String)
    case array([TemplateValue])
    case object([String: TemplateValue])

    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: TemplateValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, TemplateValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let v): try c.encode(v)
        case .int(let v): try c.encode(v)
        case .double(let v): try c.encode(v)
        case .string(let v): try c.encode(v)
        case .array(let v): try c.encode(v)
        case .object(let v): try c.encode(v)
        }
    }
}

/// How to classify. `ClassifyOptions()` answers with the most likely next
/// token over the whole vocabulary.
public struct ClassifyOptions: Sendable, Hashable {
    /// Restrict the answer to these labels (each by its first token; labels
    /// must start with different tokens) and report their probabilities,
    /// renormalised over the set. nil: the whole vocabulary.
    public var labels: [String]?
    /// Report each answer's log-probability over the vocabulary.
    public var logprobs: Bool
    /// Return each prompt's full last-position logits.
    public var logits: Bool
    /// At most this many prompts per batch; nil: sized from `memoryBudget`.
    public var batchSize: Int?
    /// Bytes a batch may use for activations and KV; nil: 1 GiB.
    public var memoryBudget: Int?
    /// Evaluate the prefix that all prompts share once (the default) or every
    /// prompt in full.
    public var sharePrefix: Bool

    public init(labels: [String]? = nil, logprobs: Bool = false, logits: Bool = false, batchSize: Int? = nil,
                memoryBudget: Int? = nil, sharePrefix: Bool = true) {
        self.labels = labels
        self.logprobs = logprobs
        self.logits = logits
        self.batchSize = batchSize
        self.memoryBudget = memoryBudget
        self.sharePrefix = sharePrefix
    }

    func c(_ arena: CArena) throws -> gm_classify_options {
        var o = gm_classify_options()
        o.struct_size = MemoryLayout<gm_classify_options>.size
        if let labels {
            if labels.isEmpty { throw GoMLXError.invalidArgument("the label set is empty") }
            o.labels = try arena.strings(labels, "labels")
            o.n_labels = labels.count
        }
        o.logprobs = logprobs
        o.logits = logits
        o.batch_size = try size(batchSize, "batchSize")
        o.memory_budget = try size(memoryBudget, "memoryBudget")
        o.no_shared_prefix = !sharePrefix
        return o
    }
}
