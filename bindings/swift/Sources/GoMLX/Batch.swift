import CGoMLX
import Foundation

/// How one classify or batch-generate call went.
public struct BatchMetrics: Sendable, Hashable {
    public let prompts: Int
    public let promptTokens: Int
    /// Tokens shared by every prompt and evaluated once (classify).
    public let sharedPrefixTokens: Int
    public let generatedTokens: Int
    public let batches: Int
    public let totalTime: Duration
    public let promptsPerSecond: Double
    public let prefillTokensPerSecond: Double
    public let decodeTokensPerSecond: Double
    public let peakMemory: Int
    public let activeMemory: Int

    init(_ m: gm_batch_metrics) {
        prompts = m.prompts
        promptTokens = m.prompt_tokens
        sharedPrefixTokens = m.shared_prefix_tokens
        generatedTokens = m.generated_tokens
        batches = m.batches
        totalTime = Duration(seconds: m.total_s)
        promptsPerSecond = m.prompts_per_s
        prefillTokensPerSecond = m.prefill_tokens_per_s
        decodeTokensPerSecond = m.decode_tokens_per_s
        peakMemory = m.peak_memory_bytes
        activeMemory = m.active_memory_bytes
    }
}

/// One prompt's answer in a ``Classification``.
public struct ClassifyResult: Sendable, Hashable {
    /// The arg-max next token (over the labels' first tokens when labels are given).
    public let token: UInt32
    /// The answer token's text (empty without a tokenizer).
    public let text: String
    /// The answer's log-probability over the vocabulary, with ``ClassifyOptions/logprobs``.
    public let logprob: Float?
    /// With labels: the index of the most probable label.
    public let label: Int?
    /// With labels: each label's probability (they sum to 1).
    public let labelProbabilities: [Float]
    /// With ``ClassifyOptions/logits``: the full last-position logits.
    public let logits: [Float]
}

/// The answers of ``Model/classify(_:options:)``, one per prompt in order,
/// and how the call went.
public struct Classification: RandomAccessCollection, Sendable, Hashable {
    public let results: [ClassifyResult]
    public let metrics: BatchMetrics

    public var startIndex: Int { results.startIndex }
    public var endIndex: Int { results.endIndex }
    public subscript(position: Int) -> ClassifyResult { results[position] }

    /// Copies the library's arrays (freed by the caller afterwards).
    init(_ r: gm_classify_result, _ metrics: BatchMetrics) {
        let k = r.n_labels
        let v = r.n_logits
        results = (0..<r.n).map { i in
            ClassifyResult(
                token: r.tokens[i],
                text: r.texts[i].map { String(cString: $0) } ?? "",
                logprob: r.logprobs.map { $0[i] },
                label: r.labels.map { Int($0[i]) },
                labelProbabilities: r.label_probs.map { Array(UnsafeBufferPointer(start: $0 + i * k, count: k)) } ?? [],
                logits: r.logits.map { Array(UnsafeBufferPointer(start: $0 + i * v, count: v)) } ?? [])
        }
        self.metrics = metrics
    }
}

/// One prompt's output in a ``BatchGeneration``.
public struct BatchOutput: Sendable, Hashable {
    /// The output text (empty without a tokenizer).
    public let text: String
    public let tokens: [UInt32]
    public let finishReason: FinishReason
}

/// The outputs of ``Model/batchGenerate(_:options:)``, one per prompt in
/// order, and how the call went.
public struct BatchGeneration: RandomAccessCollection, Sendable, Hashable {
    public let outputs: [BatchOutput]
    public let metrics: BatchMetrics

    public var startIndex: Int { outputs.startIndex }
    public var endIndex: Int { outputs.endIndex }
    public subscript(position: Int) -> BatchOutput { outputs[position] }

    init(_ r: gm_batch_result, _ metrics: BatchMetrics) {
        outputs = (0..<r.n).map { i in
            let from = r.token_offsets[i]
            let to = r.token_offsets[i + 1]
            return BatchOutput(
                text: r.texts[i].map { String(cString: $0) } ?? "",
                tokens: r.tokens.map { Array(UnsafeBufferPointer(start: $0 + from, count: to - from)) } ?? [],
                finishReason: FinishReason(r.finish_reasons[i]))
        }
        self.metrics = metrics
    }
}
