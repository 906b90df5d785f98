import CGoMLX

/// The device-strategy knobs of a model (the table in docs/tuning.md). A nil
/// field takes its `GOMLX_*` environment variable, else the default.
public struct Tuning: Sendable, Hashable {
    /// CPU: widen floating weights to the compute dtype at load, or keep them as stored.
    public var widen: Bool?
    /// CPU: expand quantised matrices to dense weights at load.
    public var dequantize: Bool?
    /// CPU: bytes the widened weights may take.
    public var memoryBudget: Int?
    /// One matmul for q/k/v.
    public var fuseProjections: Bool?
    /// The MLP activation as one compiled kernel.
    public var compile: Bool?
    /// Input rows from which a quantised product is dequantised (CPU, GPU), and
    /// output rows from which a CPU product is split over two streams; 0 = never.
    public var cpuDenseQMMRows: Int?
    public var gpuDenseQMMRows: Int?
    public var cpuSplitOut: Int?
    /// Process-wide: BLAS threads, and single-row products sent to `sgemv`.
    public var blasThreads: Int?
    public var blasGemv: Bool?

    public init(widen: Bool? = nil, dequantize: Bool? = nil, memoryBudget: Int? = nil, fuseProjections: Bool? = nil,
                compile: Bool? = nil, cpuDenseQMMRows: Int? = nil, gpuDenseQMMRows: Int? = nil, cpuSplitOut: Int? = nil,
                blasThreads: Int? = nil, blasGemv: Bool? = nil) {
        self.widen = widen
        self.dequantize = dequantize
        self.memoryBudget = memoryBudget
        self.fuseProjections = fuseProjections
        self.compile = compile
        self.cpuDenseQMMRows = cpuDenseQMMRows
        self.gpuDenseQMMRows = gpuDenseQMMRows
        self.cpuSplitOut = cpuSplitOut
        self.blasThreads = blasThreads
        self.blasGemv = blasGemv
    }

    func apply(_ o: inout gm_load_options) throws {
        func onOff(_ v: Bool?) -> Int32 { v.map { $0 ? GM_ON : GM_OFF } ?? 0 }
        // C: 0 is the default and a negative count means never.
        func rows(_ v: Int?, _ what: String) throws -> Int64 {
            guard let v else { return 0 }
            guard v >= 0 else { throw GoMLXError.invalidArgument("\(what) must not be negative (got \(v))") }
            return v == 0 ? -1 : Int64(v)
        }
        o.widen = onOff(widen)
        o.dequantize = onOff(dequantize)
        o.fuse_projections = onOff(fuseProjections)
        o.compile = onOff(compile)
        o.blas_gemv = onOff(blasGemv)
        o.memory_budget = UInt64(try size(memoryBudget, "memoryBudget"))
        o.cpu_dense_qmm_rows = try rows(cpuDenseQMMRows, "cpuDenseQMMRows")
        o.gpu_dense_qmm_rows = try rows(gpuDenseQMMRows, "gpuDenseQMMRows")
        o.cpu_split_out = try rows(cpuSplitOut, "cpuSplitOut")
        let threads = try size(blasThreads, "blasThreads")
        guard threads <= Int(UInt32.max) else { throw GoMLXError.invalidArgument("blasThreads \(threads) is too large") }
        o.blas_threads = UInt32(threads)
    }
}
