import CGoMLX
import Foundation

/// What ``Model/convert(gguf:to:options:progress:)`` does with the tensors.
public enum ConvertMode: Sendable, Hashable {
    /// Every tensor as floats.
    case dequantize
    /// Linear and embedding weights re-quantised with MLX affine quantisation, as `mlx_lm.convert -q`.
    case quantize(bits: Int = 4, groupSize: Int = 64)
    /// MLX-representable quantised blocks kept bit for bit.
    case keep
}

/// How to convert a GGUF file.
public struct ConvertOptions: Sendable, Hashable {
    public var mode: ConvertMode
    /// dtype of float tensors and scales/biases; nil: bfloat16 when dequantising, float32 otherwise.
    public var dtype: DType?

    public init(mode: ConvertMode = .dequantize, dtype: DType? = nil) {
        self.mode = mode
        self.dtype = dtype
    }
}

/// The progress callback's box, reached from C through `user_data`.
private final class ConvertProgress {
    let body: (Int, Int) -> Bool
    init(_ body: @escaping (Int, Int) -> Bool) { self.body = body }
}

extension Model {
    /// Converts the GGUF file `gguf` into a model directory `directory`
    /// (config.json, model.safetensors, tokenizer files) that gomlx and mlx-lm
    /// load. `progress(done, total)` runs after each tensor on the calling
    /// thread; returning false stops the conversion with an error. Blocks the
    /// calling thread.
    public static func convert(gguf: String, to directory: String, options: ConvertOptions = ConvertOptions(),
                               progress: ((Int, Int) -> Bool)? = nil) throws {
        let arena = CArena()
        let src = try arena.string(gguf, "gguf")
        let dst = try arena.string(directory, "directory")
        var o = gm_convert_options()
        o.struct_size = MemoryLayout<gm_convert_options>.size
        switch options.mode {
        case .dequantize: o.mode = Int32(GM_CONVERT_DEQUANTIZE)
        case .keep: o.mode = Int32(GM_CONVERT_KEEP)
        case .quantize(let bits, let group):
            o.mode = Int32(GM_CONVERT_QUANTIZE)
            o.bits = Int32(clamping: bits)
            o.group_size = Int32(clamping: group)
        }
        o.dtype = try arena.optionalString(options.dtype?.rawValue, "dtype")
        let box = ConvertProgress(progress ?? { _, _ in true })
        let context = Unmanaged.passRetained(box)
        defer { context.release() }
        let callback: gm_convert_progress_fn = { done, total, user in
            let box = Unmanaged<ConvertProgress>.fromOpaque(user!).takeUnretainedValue()
            return box.body(done, total) ? 0 : 1
        }
        let rc = withExtendedLifetime(arena) { withUnsafePointer(to: &o) { gm_convert(src, dst, $0, callback, context.toOpaque()) } }
        guard rc == GM_OK else { throw lastError("gm_convert") }
    }

    /// A chat session starting from a cache saved by ``ChatSession/save(to:)``.
    public func loadSession(from path: String) throws -> ChatSession {
        let arena = CArena()
        let p = try arena.string(path, "path")
        let s = try handle.use { h in
            guard let s = withExtendedLifetime(arena, { gm_session_load(h, p) }) else { throw lastError("gm_session_load") }
            return s
        }
        return ChatSession(s, model: self)
    }

    /// Empties the prefix cache (``LoadOptions/prefixCacheBytes``); returns the bytes it held.
    @discardableResult
    public func clearPrefixCache() throws -> Int {
        try handle.use { h in
            let n = gm_model_clear_prefix_cache(h)
            guard n >= 0 else { throw lastError("gm_model_clear_prefix_cache") }
            return Int(n)
        }
    }
}

extension ChatSession {
    /// Writes the session's cache (its tokens and KV) to `path`; ``Model/loadSession(from:)``
    /// starts a session from it, in this process or another. Throws while a reply is
    /// streaming in the session, or before anything was generated in it.
    public func save(to path: String) throws {
        let arena = CArena()
        let p = try arena.string(path, "path")
        try handle.use { s in
            guard withExtendedLifetime(arena, { gm_session_save(s, p) }) == GM_OK else { throw lastError("gm_session_save") }
        }
    }
}
