import CGoMLX
import Foundation

/// One piece of a generation's output.
public struct Token: Sendable, Hashable {
    /// The token id; nil for a final text-only piece (text that was held
    /// back for a possible stop string or an incomplete character).
    public let id: UInt32?
    /// The text this token adds to the output; may be empty while the bytes
    /// of a character or of a possible stop string are held back.
    public let text: String
    /// The token's log-probability when ``GenerateOptions/logprobs`` is set.
    public let logprob: Float?
    /// The most likely alternatives (``GenerateOptions/topLogprobs`` of them).
    public let topLogprobs: [TopLogprob]
    /// The tool calls this token completed (a chat with ``GenerateOptions/tools``);
    /// ``text`` then carries only the text outside calls.
    public let toolCalls: [ToolCall]

    init(_ t: gm_token) throws {
        id = t.id == GM_NO_TOKEN ? nil : t.id
        text = t.text.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: t.text_len), as: UTF8.self) } ?? ""
        logprob = t.logprob.isNaN ? nil : t.logprob
        topLogprobs = (0..<t.n_top_logprobs).map { TopLogprob(id: t.top_logprobs[$0].id, logprob: t.top_logprobs[$0].logprob) }
        toolCalls = try t.tool_calls.map { try ToolCall.parse(String(cString: $0)) } ?? []
    }
}

/// A likely alternative to a generated token.
public struct TopLogprob: Sendable, Hashable {
    public let id: UInt32
    public let logprob: Float
}

/// Why a generation ended.
public enum FinishReason: Sendable, Hashable {
    /// An end-of-sequence token was generated (it is not handed out).
    case endOfSequence
    /// ``GenerateOptions/maxTokens`` (or the context length) was reached.
    case length
    /// A stop string was generated (it is not part of the text).
    case stop
    /// The generation was cancelled.
    case cancelled
    /// The generation failed.
    case error

    init(_ c: Int32) {
        switch c {
        case GM_FINISH_EOS: self = .endOfSequence
        case GM_FINISH_LENGTH: self = .length
        case GM_FINISH_STOP: self = .stop
        case GM_FINISH_CANCELLED: self = .cancelled
        default: self = .error
        }
    }
}

/// How a generation went.
public struct Metrics: Sendable, Hashable {
    public let finishReason: FinishReason
    public let promptTokens: Int
    /// Prompt tokens actually evaluated (fewer when a chat session reused its cache).
    public let promptTokensEvaluated: Int
    /// Tokens generated, counting an end-of-sequence token that ended the generation.
    public let generatedTokens: Int
    public let timeToFirstToken: Duration
    public let prefillTime: Duration
    public let prefillTokensPerSecond: Double
    public let decodeTime: Duration
    public let decodeTokensPerSecond: Double
    /// MLX's peak memory in bytes (process-wide) when the generation ended.
    public let peakMemory: Int
    /// MLX's active memory in bytes (process-wide) when the generation ended.
    public let activeMemory: Int
    /// The most generations that decoded in one step with this one (continuous batching).
    public let batchRowsMax: Int

    init(_ m: gm_metrics) {
        finishReason = FinishReason(m.finish_reason)
        promptTokens = m.prompt_tokens
        promptTokensEvaluated = m.prompt_tokens_evaluated
        generatedTokens = m.generated_tokens
        timeToFirstToken = Duration(seconds: m.time_to_first_token_s)
        prefillTime = Duration(seconds: m.prefill_s)
        prefillTokensPerSecond = m.prefill_tokens_per_s
        decodeTime = Duration(seconds: m.decode_s)
        decodeTokensPerSecond = m.decode_tokens_per_s
        peakMemory = m.peak_memory_bytes
        activeMemory = m.active_memory_bytes
        batchRowsMax = m.batch_rows_max
    }
}

/// A generation's whole output (``Generation/collect()``).
public struct GenerationResult: Sendable, Hashable {
    public let text: String
    /// The generated token ids (text-only pieces have none).
    public let tokens: [UInt32]
    public let metrics: Metrics
}

/// A running generation: an `AsyncSequence` of ``Token``s as the engine makes
/// them, backed by an `AsyncThrowingStream`.
///
/// ```swift
/// let reply = try model.chat([.user("What is the capital of France?")])
/// for try await token in reply {
///     print(token.text, terminator: "")
/// }
/// print(try await reply.metrics.decodeTokensPerSecond)
/// ```
///
/// The engine starts at once and works on its own thread; tokens wait in
/// the stream until they are read. Iterate a generation once. It ends when
/// the output is complete, and stops (within one engine step) when the
/// consuming task is cancelled, when the loop is left early, when
/// ``cancel()`` is called, or when the last reference to it goes away.
/// Errors (such as "the model was closed" when the model is closed
/// meanwhile) are thrown by the loop as ``GoMLXError``.
public struct Generation: AsyncSequence, Sendable {
    public typealias Element = Token

    let owner: Owner

    init(_ handle: OpaquePointer, keepAlive: AnyObject) {
        owner = Owner(Core(handle, keepAlive: keepAlive))
    }

    public struct Iterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<Token, any Error>.Iterator
        let stopper: Stopper

        public mutating func next() async throws -> Token? {
            try await base.next()
        }
    }

    public func makeAsyncIterator() -> Iterator {
        Iterator(base: owner.tokens.makeAsyncIterator(), stopper: Stopper(owner.core))
    }

    /// Stops the generation within one engine step; the tokens already made
    /// are still handed out, then the sequence ends (``Metrics/finishReason``
    /// is ``FinishReason/cancelled``). Any task or thread, any time.
    public func cancel() {
        owner.core.cancel()
    }

    /// How the generation went; waits until it has ended. Throws the
    /// generation's error if it failed.
    public var metrics: Metrics {
        get async throws { try await owner.core.outcome() }
    }

    /// Reads the whole output.
    public func collect() async throws -> GenerationResult {
        var text = ""
        var ids: [UInt32] = []
        for try await token in self {
            text += token.text
            if let id = token.id { ids.append(id) }
        }
        return GenerationResult(text: text, tokens: ids, metrics: try await metrics)
    }

    /// The number of tokens the engine had handed over when the generation
    /// was first cancelled (for the tests' one-step bound), else nil.
    var tokensAtCancel: Int? { owner.core.tokensAtCancel }
}

extension Generation {
    /// Holds the stream; when the last copy of the ``Generation`` (and of
    /// its iterators) goes away, the generation is cancelled.
    final class Owner: Sendable {
        let core: Core
        let tokens: AsyncThrowingStream<Token, any Error>

        init(_ core: Core) {
            self.core = core
            tokens = AsyncThrowingStream { continuation in
                continuation.onTermination = { _ in core.cancel() }
                startThread("gomlx.generation") { core.run(continuation) }
            }
        }

        deinit { core.cancel() }
    }

    /// Cancels the generation when an iterator goes away: leaving a
    /// `for try await` loop early stops it.
    final class Stopper: Sendable {
        let core: Core
        init(_ core: Core) { self.core = core }
        deinit { core.cancel() }
    }

    /// The `gm_generation` and what the thread that reads it leaves behind.
    final class Core: @unchecked Sendable {
        struct State {
            /// Set to nil, under the lock, before the handle is freed.
            var handle: OpaquePointer?
            var received = 0
            var receivedAtCancel: Int?
            var outcome: Result<Metrics, any Error>?
            var waiters: [CheckedContinuation<Metrics, any Error>] = []
        }

        private let state: Locked<State>
        /// The model or session the generation came from, kept alive until it ends.
        private let keepAlive: AnyObject
        private let handle: OpaquePointer

        init(_ handle: OpaquePointer, keepAlive: AnyObject) {
            self.handle = handle
            self.keepAlive = keepAlive
            state = Locked(State(handle: handle))
        }

        /// gm_generation_cancel never blocks and is safe from any thread; the
        /// lock keeps it off a freed handle.
        func cancel() {
            state.withLock { s in
                guard let h = s.handle else { return }
                if s.receivedAtCancel == nil { s.receivedAtCancel = s.received }
                gm_generation_cancel(h)
            }
        }

        var tokensAtCancel: Int? { state.withLock { $0.receivedAtCancel } }

        /// The reading loop, on the generation's own thread: the only caller
        /// of gm_generate_next and gm_generation_free on this handle.
        func run(_ continuation: AsyncThrowingStream<Token, any Error>.Continuation) {
            let result: Result<Metrics, any Error>
            while true {
                var t = gm_token()
                t.struct_size = MemoryLayout<gm_token>.size
                let rc = gm_generate_next(handle, &t)
                if rc == 1 {
                    let token: Token
                    do {
                        token = try Token(t)
                    } catch {
                        result = .failure(error)
                        break
                    }
                    state.withLock { $0.received += 1 }
                    continuation.yield(token)
                    continue
                }
                if rc < 0 {
                    result = .failure(lastError("gm_generate_next"))
                    break
                }
                var m = gm_metrics()
                m.struct_size = MemoryLayout<gm_metrics>.size
                result = gm_generation_metrics(handle, &m) == GM_OK
                    ? .success(Metrics(m)) : .failure(lastError("gm_generation_metrics"))
                break
            }
            let waiters = state.withLock { s in
                s.handle = nil
                s.outcome = result
                defer { s.waiters = [] }
                return s.waiters
            }
            gm_generation_free(handle)
            switch result {
            case .success: continuation.finish()
            case .failure(let error): continuation.finish(throwing: error)
            }
            for w in waiters { w.resume(with: result) }
            withExtendedLifetime(keepAlive) {}
        }

        func outcome() async throws -> Metrics {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Metrics, any Error>) in
                let done: Result<Metrics, any Error>? = state.withLock { s in
                    if s.outcome == nil { s.waiters.append(c) }
                    return s.outcome
                }
                if let done { c.resume(with: done) }
            }
        }
    }
}
