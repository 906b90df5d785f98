import CGoMLX
import Foundation

/// Options of `LoRA.train`; zero / nil fields take the defaults given beside
/// them (those of `gomlx lora` and `gm_lora_options`).
public struct LoRAOptions: Sendable {
    /// Directory for adapters.safetensors + adapter_config.json (required unless `fusePath`).
    public var adapterPath: String? = nil
    /// When set, the fused model directory written after training.
    public var fusePath: String? = nil
    /// When set, adapters to continue training from.
    public var resumePath: String? = nil
    /// Projections (q_proj k_proj v_proj o_proj gate_proj up_proj down_proj); empty: q_proj, v_proj.
    public var targets: [String] = []
    public var iters = 0            // 100
    public var batchSize = 0        // 4
    public var maxSeqLength = 0     // 2048
    public var rank = 0             // 8
    public var numLayers = 0        // 0: all blocks
    public var scale: Float = 0     // 20; ignored when alpha > 0
    public var alpha: Float = 0     // scale = alpha / rank when > 0
    public var dropout: Float = 0
    public var bf16Adapters = false // A, B and the AdamW moments in bfloat16
    public var learningRate: Float = 0  // 1e-5
    public var warmup = 0
    public var cosine = false
    public var minLR: Float = 0
    public var weightDecay: Float = 0   // 0.01 when 0
    public var gradClip: Float = 0      // 0: no clipping
    public var gradCheckpoint = false
    public var maskPrompt = false
    public var fuseDequantize = false
    public var valEvery = 0         // 200
    public var saveEvery = 0        // 100
    public var seed: UInt64 = 0
    public init() {}
}

/// What the progress callback receives after each step.
public struct LoRAProgress: Sendable {
    public let step: Int
    public let iters: Int
    public let loss: Float
    /// NaN when no validation ran at this step.
    public let valLoss: Float
    public let learningRate: Float
    public let gradNorm: Float
    public let tokensPerSecond: Double
    public let trainedTokens: UInt64
    public let peakMemory: UInt64
    public let activeMemory: UInt64

    init(_ p: gm_lora_progress) {
        step = Int(p.step); iters = Int(p.iters); loss = p.loss; valLoss = p.val_loss
        learningRate = p.learning_rate; gradNorm = p.grad_norm; tokensPerSecond = p.tokens_per_second
        trainedTokens = p.trained_tokens; peakMemory = p.peak_memory; activeMemory = p.active_memory
    }
}

/// Why a run ended.
public enum LoRAStop: Sendable {
    case completed, stoppedByCallback, cancelled
}

/// The outcome of a run.
public struct LoRAResult: Sendable {
    public let steps: Int
    public let stop: LoRAStop
    public let firstLoss: Float
    public let lastLoss: Float
    /// NaN without validation data.
    public let lastValLoss: Float
    public let trainedTokens: UInt64
    public let seconds: Double
    public let peakMemory: UInt64
}

/// What `LoRA.trainStream` yields: one `.progress` per step, then `.finished`.
public enum LoRAEvent: Sendable {
    case progress(LoRAProgress)
    case finished(LoRAResult)
}

/// What the C callback reaches through `user_data` (retained for the call).
private final class LoRACallbackBox {
    let progress: ((LoRAProgress) -> Bool)?
    let isCancelled: () -> Bool
    var cancelled = false
    init(progress: ((LoRAProgress) -> Bool)?, isCancelled: @escaping () -> Bool) {
        self.progress = progress
        self.isCancelled = isCancelled
    }
}

/// A flag set from `onTermination`, read on the training thread.
private final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var set = false
    func cancel() { lock.lock(); set = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return set }
}

/// LoRA fine-tuning (`gm_lora_train`): adapters saved in mlx-lm's layout,
/// loadable with `Model(path:adapterPath:)`, by `gomlx` and by mlx-lm.
public enum LoRA {
    /// Trains adapters of the model in `model` (config.json, safetensors,
    /// tokenizer.json) on `data` (a directory with train.jsonl and optionally
    /// valid.jsonl, or one JSONL file). Blocks the calling thread for the whole
    /// run; call it off the main actor. `progress` runs after every step on this
    /// thread; returning false stops after that step (adapters are still saved).
    public static func train(model: String, data: String, options: LoRAOptions = LoRAOptions(),
                             progress: ((LoRAProgress) -> Bool)? = nil) throws -> LoRAResult {
        try run(model: model, data: data, options: options, progress: progress, isCancelled: { false })
    }

    /// The same run on its own thread, as a stream of progress events ending in
    /// `.finished`. Cancelling the consuming Task (or dropping the stream) stops
    /// training after the step in progress; the stream then finishes with
    /// `CancellationError` (the adapters trained so far are saved).
    public static func trainStream(model: String, data: String, options: LoRAOptions = LoRAOptions()) -> AsyncThrowingStream<LoRAEvent, Error> {
        AsyncThrowingStream { continuation in
            let flag = CancelFlag()
            continuation.onTermination = { _ in flag.cancel() }
            let thread = Thread {
                do {
                    let r = try run(model: model, data: data, options: options,
                                    progress: { continuation.yield(.progress($0)); return true },
                                    isCancelled: { flag.isSet })
                    if r.stop == .cancelled {
                        continuation.finish(throwing: CancellationError())
                    } else {
                        continuation.yield(.finished(r))
                        continuation.finish()
                    }
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.start()
        }
    }

    private static func run(model: String, data: String, options o: LoRAOptions,
                            progress: ((LoRAProgress) -> Bool)?, isCancelled: @escaping () -> Bool) throws -> LoRAResult {
        for (what, v) in [("iters", o.iters), ("batchSize", o.batchSize), ("maxSeqLength", o.maxSeqLength), ("rank", o.rank),
                          ("numLayers", o.numLayers), ("warmup", o.warmup), ("valEvery", o.valEvery), ("saveEvery", o.saveEvery)]
        where v < 0 || v > Int(UInt32.max) {
            throw GoMLXError(operation: "gm_lora_train", message: "LoRA \(what) \(v) is out of range")
        }
        let strings = [o.adapterPath, o.fusePath, o.resumePath, o.targets.isEmpty ? nil : o.targets.joined(separator: ",")]
        let dup: [UnsafeMutablePointer<CChar>?] = strings.map { $0.flatMap { strdup($0) } }
        defer { dup.forEach { free($0) } }
        var c = gm_lora_options()
        c.struct_size = MemoryLayout<gm_lora_options>.size
        c.adapter_path = UnsafePointer(dup[0])
        c.fuse_path = UnsafePointer(dup[1])
        c.resume_path = UnsafePointer(dup[2])
        c.targets = UnsafePointer(dup[3])
        c.iters = UInt32(o.iters); c.batch_size = UInt32(o.batchSize); c.max_seq_length = UInt32(o.maxSeqLength)
        c.rank = UInt32(o.rank); c.num_layers = UInt32(o.numLayers); c.warmup = UInt32(o.warmup)
        c.val_every = UInt32(o.valEvery); c.save_every = UInt32(o.saveEvery)
        c.scale = o.scale; c.alpha = o.alpha; c.dropout = o.dropout; c.learning_rate = o.learningRate
        c.min_lr = o.minLR; c.weight_decay = o.weightDecay; c.grad_clip = o.gradClip
        c.cosine = o.cosine ? 1 : 0; c.grad_checkpoint = o.gradCheckpoint ? 1 : 0; c.mask_prompt = o.maskPrompt ? 1 : 0
        c.lora_bf16 = o.bf16Adapters ? 1 : 0; c.fuse_dequantize = o.fuseDequantize ? 1 : 0
        c.seed = o.seed

        let box = LoRACallbackBox(progress: progress, isCancelled: isCancelled)
        let ctx = Unmanaged.passRetained(box).toOpaque()
        defer { Unmanaged<LoRACallbackBox>.fromOpaque(ctx).release() }
        // A C function pointer captures nothing: the box travels as user_data.
        let callback: gm_lora_progress_fn = { p, user in
            guard let user, let p else { return 1 }
            let box = Unmanaged<LoRACallbackBox>.fromOpaque(user).takeUnretainedValue()
            if box.isCancelled() { box.cancelled = true; return 1 }
            guard let f = box.progress else { return 0 }
            return f(LoRAProgress(p.pointee)) ? 0 : 1
        }
        var r = gm_lora_result()
        r.struct_size = MemoryLayout<gm_lora_result>.size
        guard gm_lora_train(model, data, &c, callback, ctx, &r) == GM_OK else { throw lastError("gm_lora_train") }
        let stop: LoRAStop = r.stopped_early == 0 ? .completed : (box.cancelled ? .cancelled : .stoppedByCallback)
        return LoRAResult(steps: Int(r.steps), stop: stop, firstLoss: r.first_loss, lastLoss: r.last_loss,
                          lastValLoss: r.last_val_loss, trainedTokens: r.trained_tokens, seconds: r.seconds,
                          peakMemory: r.peak_memory)
    }
}
