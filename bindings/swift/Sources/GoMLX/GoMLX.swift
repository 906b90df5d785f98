import CGoMLX
import Foundation

/// An error reported by the gomlx engine, with its message.
public struct GoMLXError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let message: String
    public var description: String { "gomlx: \(operation): \(message)" }
}

/// Reads the calling thread's last error. gm_last_error is thread-local: call
/// it right after the failing call, on the same thread (no `await` between).
func lastError(_ op: String) -> GoMLXError {
    GoMLXError(operation: op, message: gm_last_error().map { String(cString: $0) } ?? "unknown error")
}

/// Where a model runs.
public enum Device: Int32, Sendable {
    case `default` = 0, cpu = 1, gpu = 2
}

/// Model description.
public struct ModelInfo: Sendable {
    public let architecture: String
    public let vocabSize: Int
    public let numLayers: Int
    public let hiddenSize: Int
    public let contextLength: Int
    public let dtype: String
    public let quantBits: Int
    public let parameters: UInt64
    public let device: String
    public let hasTokenizer: Bool
}

/// One generated token. `id == Token.noToken` marks a final text-only piece.
public struct Token: Sendable {
    public static let noToken = UInt32.max
    public let id: UInt32
    public let text: String
    /// NaN unless `GenerateOptions.logprobs`.
    public let logprob: Float
}

/// Chat message.
public struct Message: Sendable {
    public var role: String
    public var content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
    public static func user(_ s: String) -> Message { Message(role: "user", content: s) }
    public static func system(_ s: String) -> Message { Message(role: "system", content: s) }
    public static func assistant(_ s: String) -> Message { Message(role: "assistant", content: s) }
}

/// Generation options; zero values mean the engine's defaults.
public struct GenerateOptions: Sendable {
    public var maxTokens = 0
    public var temperature: Float = 0
    public var topK = 0
    public var topP: Float = 0
    public var minP: Float = 0
    public var repetitionPenalty: Float = 0
    public var seed: UInt64? = nil
    public var logprobs = false
    public var stop: [String] = []
    public var ignoreEOS = false
    public init() {}
}

/// One classify answer.
public struct ClassifyResult: Sendable {
    public let token: UInt32
    public let text: String
    /// Index of the most probable label, or -1 without labels.
    public let label: Int
    public let labelProbs: [Float]
    /// The full last-position logits when asked for (`logits: true`), else empty.
    public let logits: [Float]
}

/// Runs `body` with C strings for `strings` (valid during the call only).
func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) throws -> R) rethrows -> R {
    let dup = strings.map { strdup($0) }
    defer { dup.forEach { free($0) } }
    return try body(dup.map { UnsafePointer($0) })
}

/// A loaded model. Thread-safe: use it from any task; requests run on its
/// engine thread. Closed by `close()` or when the last reference goes away.
public final class Model: @unchecked Sendable {
    private let lock = NSLock()
    private var handle: OpaquePointer?
    public let info: ModelInfo

    /// Loads a model directory or `.gguf` file. `adapterPath`: a LoRA adapter
    /// directory in mlx-lm's layout (adapters.safetensors + adapter_config.json,
    /// as `LoRA.train`, `gomlx lora` and `mlx_lm.lora` write it) applied at load.
    public init(path: String, device: Device = .default, contextLength: Int = 0, adapterPath: String? = nil) throws {
        var opts = gm_load_options()
        opts.struct_size = MemoryLayout<gm_load_options>.size
        opts.device = device.rawValue
        opts.context_length = contextLength
        let adapter: UnsafeMutablePointer<CChar>? = adapterPath.flatMap { strdup($0) }
        defer { free(adapter) }
        opts.adapter_path = UnsafePointer(adapter)
        guard let h = gm_model_load(path, &opts) else { throw lastError("gm_model_load") }
        var i = gm_info()
        i.struct_size = MemoryLayout<gm_info>.size
        guard gm_model_info(h, &i) == GM_OK else {
            let e = lastError("gm_model_info")
            gm_model_close(h)
            throw e
        }
        info = ModelInfo(
            architecture: String(cString: i.architecture), vocabSize: i.vocab_size, numLayers: i.num_layers,
            hiddenSize: i.hidden_size, contextLength: i.context_length, dtype: String(cString: i.dtype),
            quantBits: Int(i.quant_bits), parameters: i.parameters, device: String(cString: i.device),
            hasTokenizer: i.has_tokenizer)
        handle = h
    }

    deinit { close() }

    /// Cancels running generations (they finish with an error), frees the weights. Idempotent.
    public func close() {
        lock.lock()
        let h = handle
        handle = nil
        lock.unlock()
        if let h { gm_model_close(h) }
    }

    /// Runs `body` with the live handle, holding the lock so close() waits for it.
    func withHandle<R>(_ op: String, _ body: (OpaquePointer) throws -> R) throws -> R {
        lock.lock()
        defer { lock.unlock() }
        guard let h = handle else { throw GoMLXError(operation: op, message: "the model is closed") }
        return try body(h)
    }

    /// Streams a continuation of `prompt`. Cancelling the consuming Task cancels the generation.
    public func generate(_ prompt: String, options: GenerateOptions = GenerateOptions()) -> AsyncThrowingStream<Token, Error> {
        stream("gm_generate_start", options: options) { h, o in gm_generate_start(h, prompt, o) }
    }

    /// Streams the assistant's reply to `messages` (the model's chat template).
    public func chat(_ messages: [Message], options: GenerateOptions = GenerateOptions()) -> AsyncThrowingStream<Token, Error> {
        stream("gm_chat_start", options: options) { h, o in
            withCStrings(messages.map(\.role)) { roles in
                withCStrings(messages.map(\.content)) { contents in
                    var msgs = (0..<messages.count).map { gm_message(role: roles[$0], content: contents[$0]) }
                    return gm_chat_start(h, &msgs, messages.count, o)
                }
            }
        }
    }

    private func stream(_ op: String, options: GenerateOptions = GenerateOptions(),
                        start: (OpaquePointer, UnsafePointer<gm_generate_options>) -> OpaquePointer?) -> AsyncThrowingStream<Token, Error> {
        let gen: Generation
        do {
            gen = try withHandle(op) { h in
                try withOptions(options) { o in
                    guard let g = start(h, o) else { throw lastError(op) }
                    return Generation(g)
                }
            }
        } catch {
            return AsyncThrowingStream { $0.finish(throwing: error) }
        }
        return AsyncThrowingStream { continuation in
            // gm_generate_next blocks: run the loop on its own thread.
            let thread = Thread {
                while true {
                    switch gen.next() {
                    case .token(let t): continuation.yield(t)
                    case .end: continuation.finish(); return
                    case .failure(let e): continuation.finish(throwing: e); return
                    }
                }
            }
            continuation.onTermination = { _ in gen.cancel() } // Task cancelled or consumer gone
            thread.start()
        }
    }

    /// Classifies each prompt by its next token, optionally restricted to `labels`.
    public func classify(_ prompts: [String], labels: [String] = []) throws -> [ClassifyResult] {
        try withHandle("gm_classify") { h in
            try withCStrings(prompts) { ps in
                try withCStrings(labels) { ls in
                    var opts = gm_classify_options()
                    opts.struct_size = MemoryLayout<gm_classify_options>.size
                    var r = gm_classify_result()
                    r.struct_size = MemoryLayout<gm_classify_result>.size
                    var lsCopy = ls
                    var psCopy = ps
                    let rc: Int32 = lsCopy.withUnsafeMutableBufferPointer { lb in
                        opts.labels = labels.isEmpty ? nil : UnsafePointer(lb.baseAddress)
                        opts.n_labels = labels.count
                        return psCopy.withUnsafeMutableBufferPointer { pb in
                            gm_classify(h, UnsafePointer(pb.baseAddress), prompts.count, &opts, &r, nil)
                        }
                    }
                    guard rc == GM_OK else { throw lastError("gm_classify") }
                    defer { gm_classify_result_free(&r) }
                    return results(r)
                }
            }
        }
    }

    /// Classifies prompts given as token ids (works without a tokenizer); with
    /// `logits`, each result carries the full last-position logits.
    public func classifyTokens(_ prompts: [[UInt32]], logits: Bool = false) throws -> [ClassifyResult] {
        try withHandle("gm_classify_tokens") { h in
            var opts = gm_classify_options()
            opts.struct_size = MemoryLayout<gm_classify_options>.size
            opts.logits = logits
            var r = gm_classify_result()
            r.struct_size = MemoryLayout<gm_classify_result>.size
            // Copies that live until the call returns.
            let bufs = prompts.map { p -> UnsafeMutablePointer<UInt32> in
                let b = UnsafeMutablePointer<UInt32>.allocate(capacity: max(p.count, 1))
                b.initialize(from: p, count: p.count)
                return b
            }
            defer { bufs.forEach { $0.deallocate() } }
            var ptrs: [UnsafePointer<UInt32>?] = bufs.map { UnsafePointer($0) }
            var lens = prompts.map(\.count)
            let rc = ptrs.withUnsafeMutableBufferPointer { pb in
                lens.withUnsafeMutableBufferPointer { lb in
                    gm_classify_tokens(h, UnsafePointer(pb.baseAddress), UnsafePointer(lb.baseAddress), prompts.count, &opts, &r, nil)
                }
            }
            guard rc == GM_OK else { throw lastError("gm_classify_tokens") }
            defer { gm_classify_result_free(&r) }
            return results(r)
        }
    }
}

/// Copies a classify result out of the library's arrays.
func results(_ r: gm_classify_result) -> [ClassifyResult] {
    let k = r.n_labels
    let v = r.n_logits
    return (0..<r.n).map { i in
        ClassifyResult(
            token: r.tokens[i], text: String(cString: r.texts[i]!),
            label: r.labels.map { Int($0[i]) } ?? -1,
            labelProbs: r.label_probs.map { p in (0..<k).map { p[i * k + $0] } } ?? [],
            logits: r.logits.map { p in (0..<v).map { p[i * v + $0] } } ?? [])
    }
}

func withOptions<R>(_ o: GenerateOptions, _ body: (UnsafePointer<gm_generate_options>) throws -> R) rethrows -> R {
    try withCStrings(o.stop) { stops in
        var c = gm_generate_options()
        c.struct_size = MemoryLayout<gm_generate_options>.size
        c.max_tokens = o.maxTokens
        c.temperature = o.temperature
        c.top_k = o.topK
        c.top_p = o.topP
        c.min_p = o.minP
        c.repetition_penalty = o.repetitionPenalty
        if let s = o.seed { c.seed = s; c.has_seed = true }
        c.logprobs = o.logprobs
        c.ignore_eos = o.ignoreEOS
        var stopsCopy = stops
        return try stopsCopy.withUnsafeMutableBufferPointer { sb in
            c.stop = o.stop.isEmpty ? nil : UnsafePointer(sb.baseAddress)
            c.n_stop = o.stop.count
            return try withUnsafePointer(to: &c) { try body($0) }
        }
    }
}

/// Owns one gm_generation; freed on deinit.
final class Generation: @unchecked Sendable {
    enum Step { case token(Token), end, failure(Error) }
    private let g: OpaquePointer
    init(_ g: OpaquePointer) { self.g = g }
    deinit { gm_generation_free(g) }

    /// Safe from any thread (gm_generation_cancel never blocks).
    func cancel() { gm_generation_cancel(g) }

    /// Blocks until the next token. Error text is read on this same thread.
    func next() -> Step {
        var t = gm_token()
        t.struct_size = MemoryLayout<gm_token>.size
        switch gm_generate_next(g, &t) {
        case 1: return .token(Token(id: t.id, text: String(cString: t.text), logprob: t.logprob))
        case 0:
            if gm_generation_finish_reason(g) == GM_FINISH_CANCELLED { return .failure(CancellationError()) }
            return .end
        default: return .failure(lastError("gm_generate_next"))
        }
    }
}

/// Process-wide MLX memory statistics and limits (bytes).
public enum Memory {
    public static var active: Int { gm_memory_active() }
    public static var peak: Int { gm_memory_peak() }
    public static var cache: Int { gm_memory_cache() }
    public static func resetPeak() { gm_memory_reset_peak() }
    @discardableResult public static func setMemoryLimit(_ bytes: Int) -> Int { gm_set_memory_limit(bytes) }
    @discardableResult public static func setCacheLimit(_ bytes: Int) -> Int { gm_set_cache_limit(bytes) }
    public static func clearCache() { gm_clear_cache() }
}

/// The library version and C ABI version.
public enum Library {
    public static var version: String { String(cString: gm_version()) }
    public static var abiVersion: UInt32 { gm_abi_version() }
}
