import CGoMLX
import Foundation

/// A model split over the ranks of an MLX distributed group (docs/distributed.md):
/// rank 0 loads with ``Model/init(path:options:)`` and serves; every other rank
/// calls ``Model/follow(path:options:)``. `gomlx launch -n N -- ./app` starts the ranks.
extension Model {
    /// The rank this process plays when `options.distributed` (or, when nil,
    /// `GOMLX_DISTRIBUTED`) splits the model, as the launcher's `MLX_RANK` gives
    /// it: 0 leads, above 0 follows; nil when the model is not split. Loads nothing.
    public static func distributedRank(options: LoadOptions = LoadOptions()) throws -> Int? {
        var rank: Int64 = -1
        try options.withC { o in
            guard gm_distributed_rank(o, &rank) == GM_OK else { throw lastError("gm_distributed_rank") }
        }
        return rank < 0 ? nil : Int(rank)
    }

    /// On a rank above 0: loads this rank's part of the model at `path` (with
    /// the options rank 0 uses) and runs the steps rank 0's model sends until
    /// rank 0 closes it. Returns the turns followed. Blocks the calling thread.
    public static func follow(path: String, options: LoadOptions = LoadOptions()) throws -> UInt64 {
        let arena = CArena()
        let cPath = try arena.string(path, "path")
        var steps: UInt64 = 0
        try withExtendedLifetime(arena) {
            try options.withC { o in
                guard gm_follow(cPath, o, &steps) == GM_OK else { throw lastError("gm_follow") }
            }
        }
        return steps
    }
}
