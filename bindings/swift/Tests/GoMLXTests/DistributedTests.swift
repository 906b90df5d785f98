import Foundation
import Testing

@testable import GoMLX

/// The options of issue 26: replicas and the distributed rank. Mirrors
/// bindings/go/distributed_test.go; the split itself (ranks on loopback) is
/// tested through the C ABI in tests/distributed.rs.
@Suite(.serialized)
struct DistributedTests {
    /// Sets the environment variables for `body`, then restores them.
    func withEnvironment<T>(_ vars: [String: String], _ body: () throws -> T) rethrows -> T {
        let old = vars.keys.map { ($0, ProcessInfo.processInfo.environment[$0]) }
        for (k, v) in vars { setenv(k, v, 1) }
        defer { for (k, v) in old { if let v { setenv(k, v, 1) } else { unsetenv(k) } } }
        return try body()
    }

    /// What `body` threw, nil when it did not (synchronous: the library's
    /// last error is read on this thread).
    func thrownNow<T>(_ body: () throws -> T) -> (any Error)? {
        do { _ = try body(); return nil } catch { return error }
    }

    @Test func rankComesFromTheLauncher() throws {
        try withEnvironment(["GOMLX_DISTRIBUTED": "", "MLX_RANK": "2"]) { () throws -> Void in
            #expect(try Model.distributedRank(options: LoadOptions(distributed: "ring")) == 2)
            #expect(try Model.distributedRank(options: LoadOptions(distributed: "off")) == nil)
            #expect(try Model.distributedRank() == nil)
            let bad = try #require(thrownNow { try Model.distributedRank(options: LoadOptions(distributed: "tcp")) })
            #expect(libraryMessage(bad).contains("gm_load_options.distributed is 'tcp'"))
            #expect(try Model.distributedRank(options: LoadOptions(distributed: "ring", moeSplit: "experts")) == 2)
            let split = try #require(thrownNow { try Model.distributedRank(options: LoadOptions(distributed: "ring", moeSplit: "rows")) })
            #expect(libraryMessage(split).contains("gm_load_options.moe_split is 'rows'"))
        }
        try withEnvironment(["GOMLX_DISTRIBUTED": "ring", "MLX_RANK": "1"]) { () throws -> Void in
            #expect(try Model.distributedRank() == 1)
        }
    }

    @Test func rankZeroCannotFollow() throws {
        try withEnvironment(["GOMLX_DISTRIBUTED": "", "MLX_RANK": "0"]) { () throws -> Void in
            let e = try #require(thrownNow { try Model.follow(path: Repo.smolLM2, options: LoadOptions(distributed: "ring")) })
            #expect(libraryMessage(e).contains("not a follower rank"))
        }
    }

    /// Two replicas answer every request as one engine does.
    @Test func replicasKeepTheAnswers() async throws {
        let asks = ["France", "Japan", "Peru", "Norway"].map { [Message.user("What is the capital of \($0)?")] }
        let options = GenerateOptions(maxTokens: 8)
        var want: [String] = []
        for a in asks { want.append(try await smolLM2().chat(a, options: options).collect().text) }
        let model = try await Model.load(Repo.smolLM2, options: LoadOptions(contextLength: 2048, replicas: 2))
        defer { model.close() }
        let got = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (i, a) in asks.enumerated() {
                group.addTask { (i, try await model.chat(a, options: options).collect().text) }
            }
            var out = [String](repeating: "", count: asks.count)
            for try await (i, text) in group { out[i] = text }
            return out
        }
        #expect(got == want)
        #expect(await thrown { try Model(path: Repo.smolLM2, options: LoadOptions(replicas: -1)) } is GoMLXError)
    }
}
