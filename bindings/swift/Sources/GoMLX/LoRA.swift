import CGoMLX
import Foundation

/// How to train LoRA adapters. Every property has a default (those of
/// `gomlx lora` and mlx-lm); set at least ``adapterPath`` (or ``fusePath``).
public struct LoRAOptions: Sendable, Hashable {
    /// Directory for `adapters.safetensors` + `adapter_config.json`.
    public var adapterPath: String?
    /// When set, the fused model directory written after training.
    public var fusePath: String?
    /// When set, adapters to continue training from.
    public var resumePath: String?
    /// The projections to adapt (`q_proj`, `k_proj`, `v_proj`, `o_proj`,
    /// `gate_proj`, `up_proj`, `down_proj`); empty: `q_proj` and `v_proj`.
    public var targets: [String]
    /// Training steps; nil: 100.
    public var iterations: Int?
    /// Examples per step; nil: 4.
    public var batchSize: Int?
    /// Tokens per example (longer ones are truncated); nil: 2048.
    public var maxSequenceLength: Int?
    /// LoRA rank; nil: 8.
    public var rank: Int?
    /// Adapt the last `numLayers` blocks; nil: all.
    public var numLayers: Int?
    /// LoRA scale; nil: 20 (ignored when `alpha` is set).
    public var scale: Float?
    /// When set, scale = alpha / rank.
    public var alpha: Float?
    /// LoRA dropout.
    public var dropout: Float
    /// A, B and the AdamW moments in bfloat16 (else float32).
    public var bf16Adapters: Bool
    /// Peak learning rate; nil: 1e-5.
    public var learningRate: Float?
    /// Linear warm-up steps.
    public var warmupSteps: Int
    /// Cosine decay to `minLearningRate` after the warm-up.
    public var cosineDecay: Bool
    public var minLearningRate: Float
    /// AdamW weight decay; nil: 0.01 (a tiny value for none).
    public var weightDecay: Float?
    /// Clip gradients to this global norm; nil: no clipping.
    public var gradientClip: Float?
    /// Recompute activations per block in the backward pass (less memory).
    public var gradientCheckpointing: Bool
    /// Train on completions only.
    public var maskPrompt: Bool
    /// Fuse quantised projections into dense weights (with `fusePath`).
    public var fuseDequantize: Bool
    /// Validate every this many steps when `valid.jsonl` exists; nil: 200.
    public var validateEvery: Int?
    /// Save adapters every this many steps; nil: 100.
    public var saveEvery: Int?
    /// Data shuffle, adapter initialisation and dropout.
    public var seed: UInt64

    public init(adapterPath: String? = nil, fusePath: String? = nil, resumePath: String? = nil, targets: [String] = [],
                iterations: Int? = nil, batchSize: Int? = nil, maxSequenceLength: Int? = nil, rank: Int? = nil,
                numLayers: Int? = nil, scale: Float? = nil, alpha: Float? = nil, dropout: Float = 0,
                bf16Adapters: Bool = false, learningRate: Float? = nil, warmupSteps: Int = 0, cosineDecay: Bool = false,
                minLearningRate: Float = 0, weightDecay: Float? = nil, gradientClip: Float? = nil,
                gradientCheckpointing: Bool = false, maskPrompt: Bool = false, fuseDequantize: Bool = false,
                validateEvery: Int? = nil, saveEvery: Int? = nil, seed: UInt64 = 0) {
        self.adapterPath = adapterPath
        self.fusePath = fusePath
        self.resumePath = resumePath
        self.targets = targets
        self.iterations = iterations
        self.batchSize = batchSize
        self.maxSequenceLength = maxSequenceLength
        self.rank = rank
        self.numLayers = numLayers
        self.scale = scale
        self.alpha = alpha
        self.dropout = dropout
        self.bf16Adapters = bf16Adapters
        self.learningRate = learningRate
        self.warmupSteps = warmupSteps
        self.cosineDecay = cosineDecay
        self.minLearningRate = minLearningRate
        self.weightDecay = weightDecay
        self.gradientClip = gradientClip
        self.gradientCheckpointing = gradientCheckpointing
        self.maskPrompt = maskPrompt
        self.fuseDequantize = fuseDequantize
        self.validateEvery = validateEvery
        self.saveEvery = saveEvery
        self.seed = seed
    }

    func c(_ arena: CArena) throws -> gm_lora_options {
        func count(_ value: Int?, _ what: String) throws -> UInt32 {
            let v = try size(value, what)
            guard v <= Int(UInt32.max) else { throw GoMLXError.invalidArgument("\(what) \(v) is too large") }
            return UInt32(v)
        }
        var c = gm_lora_options()
        c.struct_size = MemoryLayout<gm_lora_options>.size
        c.adapter_path = try arena.optionalString(adapterPath, "adapterPath")
        c.fuse_path = try arena.optionalString(fusePath, "fusePath")
        c.resume_path = try arena.optionalString(resumePath, "resumePath")
        c.targets = try arena.optionalString(targets.isEmpty ? nil : targets.joined(separator: ","), "targets")
        c.iters = try count(iterations, "iterations")
        c.batch_size = try count(batchSize, "batchSize")
        c.max_seq_length = try count(maxSequenceLength, "maxSequenceLength")
        c.rank = try count(rank, "rank")
        c.num_layers = try count(numLayers, "numLayers")
        c.scale = scale ?? 0
        c.alpha = alpha ?? 0
        c.dropout = dropout
        c.lora_bf16 = bf16Adapters ? 1 : 0
        c.learning_rate = learningRate ?? 0
        c.warmup = try count(warmupSteps, "warmupSteps")
        c.cosine = cosineDecay ? 1 : 0
        c.min_lr = minLearningRate
        c.weight_decay = weightDecay ?? 0
        c.grad_clip = gradientClip ?? 0
        c.grad_checkpoint = gradientCheckpointing ? 1 : 0
        c.mask_prompt = maskPrompt ? 1 : 0
        c.fuse_dequantize = fuseDequantize ? 1 : 0
        c.val_every = try count(validateEvery, "validateEvery")
        c.save_every = try count(saveEvery, "saveEvery")
        c.seed = seed
        return c
    }
}

/// What the progress callback receives after each step.
public struct LoRAProgress: Sendable, Hashable {
    public let step: Int
    public let iterations: Int
    public let loss: Float
    /// The validation loss when validation ran at this step.
    public let validationLoss: Float?
    public let learningRate: Float
    /// The gradient norm before clipping.
    public let gradientNorm: Float
    /// Real (non-padding) tokens per second so far.
    public let tokensPerSecond: Double
    public let trainedTokens: Int
    /// MLX's peak memory in bytes since training started.
    public let peakMemory: Int
    public let activeMemory: Int

    init(_ p: gm_lora_progress) {
        step = Int(p.step)
        iterations = Int(p.iters)
        loss = p.loss
        validationLoss = p.val_loss.isNaN ? nil : p.val_loss
        learningRate = p.learning_rate
        gradientNorm = p.grad_norm
        tokensPerSecond = p.tokens_per_second
        trainedTokens = Int(p.trained_tokens)
        peakMemory = Int(p.peak_memory)
        activeMemory = Int(p.active_memory)
    }
}

/// Why a training run ended.
public enum LoRAStop: Sendable, Hashable {
    /// Every step ran.
    case completed
    /// The progress callback returned false.
    case stoppedByCallback
    /// The task was cancelled.
    case cancelled
}

/// The outcome of a training run.
public struct LoRAResult: Sendable, Hashable {
    public let steps: Int
    public let stop: LoRAStop
    public let firstLoss: Float
    public let lastLoss: Float
    /// The last validation loss, when there was validation data.
    public let lastValidationLoss: Float?
    public let trainedTokens: Int
    public let duration: Duration
    public let peakMemory: Int
}

/// What ``LoRA/training(model:data:options:)`` yields: one `.progress` per
/// step, then `.finished`.
public enum LoRAEvent: Sendable, Hashable {
    case progress(LoRAProgress)
    case finished(LoRAResult)
}

/// LoRA fine-tuning: adapters saved in mlx-lm's layout, which
/// ``LoadOptions/adapterPath``, `gomlx` and mlx-lm load.
public enum LoRA {
    /// Trains adapters of the model in `model` (config.json, safetensors,
    /// tokenizer.json) on `data` (a directory with train.jsonl and optionally
    /// valid.jsonl, or one JSONL file in mlx-lm's text, prompt/completion or
    /// messages format), on a thread of its own.
    ///
    /// `progress` runs after every step, on the training thread; returning
    /// false stops training after that step. Cancelling the calling task stops
    /// it after the step in progress, and the result says ``LoRAStop/cancelled``.
    /// Either way the adapters trained so far are saved.
    ///
    /// ```swift
    /// let result = try await LoRA.train(model: "./Qwen3-0.6B", data: "./data",
    ///                                   options: LoRAOptions(adapterPath: "./adapters", iterations: 600)) { p in
    ///     print("step \(p.step): loss \(p.loss)")
    ///     return true
    /// }
    /// ```
    public static func train(model: String, data: String, options: LoRAOptions = LoRAOptions(),
                             progress: (@Sendable (LoRAProgress) -> Bool)? = nil) async throws -> LoRAResult {
        try Task.checkCancellation()
        let cancelled = Locked(false)
        return try await withTaskCancellationHandler {
            try await onOwnThread("gomlx.lora") {
                try run(model: model, data: data, options: options, progress: progress) {
                    cancelled.withLock { $0 }
                }
            }
        } onCancel: {
            cancelled.withLock { $0 = true }
        }
    }

    /// The same run as an `AsyncThrowingStream`: one `.progress` event per
    /// step, then `.finished` with the result. Leaving the loop or cancelling
    /// the consuming task stops training after the step in progress (the
    /// adapters trained so far are saved) and ends the stream.
    public static func training(model: String, data: String, options: LoRAOptions = LoRAOptions())
        -> AsyncThrowingStream<LoRAEvent, any Error>
    {
        AsyncThrowingStream { continuation in
            let stopped = Locked(false)
            continuation.onTermination = { _ in stopped.withLock { $0 = true } }
            startThread("gomlx.lora") {
                do {
                    let result = try run(model: model, data: data, options: options,
                                         progress: { continuation.yield(.progress($0)); return true },
                                         isCancelled: { stopped.withLock { $0 } })
                    continuation.yield(.finished(result))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
        }
    }

    /// What the C callback reaches through `user_data` (retained for the call).
    private final class CallbackBox {
        let progress: ((LoRAProgress) -> Bool)?
        let isCancelled: () -> Bool
        var cancelled = false

        init(progress: ((LoRAProgress) -> Bool)?, isCancelled: @escaping () -> Bool) {
            self.progress = progress
            self.isCancelled = isCancelled
        }
    }

    /// One blocking gm_lora_train call on this thread.
    private static func run(model: String, data: String, options: LoRAOptions,
                            progress: ((LoRAProgress) -> Bool)?, isCancelled: @escaping () -> Bool) throws -> LoRAResult {
        let arena = CArena()
        let cModel = try arena.string(model, "model")
        let cData = try arena.string(data, "data")
        var c = try options.c(arena)
        let box = CallbackBox(progress: progress, isCancelled: isCancelled)
        let user = Unmanaged.passRetained(box).toOpaque()
        defer { Unmanaged<CallbackBox>.fromOpaque(user).release() }
        // A C function pointer captures nothing: the box travels as user_data.
        let callback: gm_lora_progress_fn = { p, user in
            guard let p, let user else { return 1 }
            let box = Unmanaged<CallbackBox>.fromOpaque(user).takeUnretainedValue()
            if box.isCancelled() {
                box.cancelled = true
                return 1
            }
            guard let f = box.progress else { return 0 }
            return f(LoRAProgress(p.pointee)) ? 0 : 1
        }
        var r = gm_lora_result()
        r.struct_size = MemoryLayout<gm_lora_result>.size
        let rc = withExtendedLifetime(arena) { gm_lora_train(cModel, cData, &c, callback, user, &r) }
        guard rc == GM_OK else { throw lastError("gm_lora_train") }
        let stop: LoRAStop = r.stopped_early == 0 ? .completed : (box.cancelled ? .cancelled : .stoppedByCallback)
        return LoRAResult(steps: Int(r.steps), stop: stop, firstLoss: r.first_loss, lastLoss: r.last_loss,
                          lastValidationLoss: r.last_val_loss.isNaN ? nil : r.last_val_loss,
                          trainedTokens: Int(r.trained_tokens), duration: Duration(seconds: r.seconds),
                          peakMemory: Int(r.peak_memory))
    }
}
