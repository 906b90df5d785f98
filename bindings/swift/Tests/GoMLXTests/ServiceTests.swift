import Foundation
import Testing

@testable import GoMLX

/// The parts added with the architecture and batching work: GGUF conversion,
/// discovery of GGUF files, tuning knobs, batching metrics, the prefix cache
/// and session files. Mirrors bindings/go/convert_test.go and session_test.go.
@Suite(.serialized)
struct ServiceTests {
    static let question: [Message] = [.user("What is the capital of France?")]

    @Test func convertKeepsTheModel() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("smollm2").path
        final class Seen {
            var calls = 0
            var done = 0
            var total = 0
        }
        let seen = Seen()
        try Model.convert(gguf: Repo.smolLM2, to: out, options: ConvertOptions(mode: .keep)) { done, total in
            seen.calls += 1
            (seen.done, seen.total) = (done, total)
            return true
        }
        #expect(seen.total > 100 && seen.calls == seen.total && seen.done == seen.total)
        let converted = try await Model.load(out)
        defer { converted.close() }
        let want = try await smolLM2().chat(Self.question, options: GenerateOptions(maxTokens: 12)).collect().text
        let got = try await converted.chat(Self.question, options: GenerateOptions(maxTokens: 12)).collect().text
        #expect(got == want)
        let stopped = await thrown { try Model.convert(gguf: Repo.smolLM2, to: out) { done, _ in done < 3 } }
        #expect(libraryMessage(try #require(stopped)).contains("stopped by the progress callback"))
        let bits = await thrown { try Model.convert(gguf: Repo.smolLM2, to: out, options: ConvertOptions(mode: .quantize(bits: 7))) }
        #expect(libraryMessage(try #require(bits)).contains("bits 7"))
    }

    @Test func discoverListsGGUFFiles() throws {
        let found = try Model.discover(in: Repo.path(".cache/models"))
        let smol = try #require(found.first { $0.path.hasSuffix("SmolLM2-135M-Instruct.Q4_1.gguf") })
        let size = try FileManager.default.attributesOfItem(atPath: Repo.smolLM2)[.size] as? Int
        #expect(smol.format == "gguf" && smol.architecture == "llama" && smol.supported && smol.sizeBytes == size)
    }

    @Test func tuningKnobsKeepTheAnswer() async throws {
        let want = try await smolLM2().chat(Self.question, options: GenerateOptions(maxTokens: 8)).collect().text
        let tuning = Tuning(widen: false, compile: false, cpuDenseQMMRows: 0, cpuSplitOut: 0)
        let model = try await Model.load(Repo.smolLM2, options: LoadOptions(contextLength: 2048, tuning: tuning))
        defer { model.close() }
        #expect(try await model.chat(Self.question, options: GenerateOptions(maxTokens: 8)).collect().text == want)
        let bad = await thrown { try Model(path: Repo.smolLM2, options: LoadOptions(tuning: Tuning(cpuSplitOut: -1))) }
        #expect(bad is GoMLXError)
    }

    /// Streams of several tasks share decode steps and each gets its solo answer.
    @Test func tasksShareOneBatch() async throws {
        let model = try smolLM2()
        let asks = ["France", "Japan", "Peru", "Norway", "Kenya", "Chile"].map { [Message.user("What is the capital of \($0)?")] }
        var alone: [String] = []
        for a in asks { alone.append(try await model.chat(a, options: GenerateOptions(maxTokens: 10)).collect().text) }
        let together = try await withThrowingTaskGroup(of: (Int, GenerationResult).self) { group in
            for (i, a) in asks.enumerated() {
                group.addTask { (i, try await model.chat(a, options: GenerateOptions(maxTokens: 10)).collect()) }
            }
            var out = [GenerationResult?](repeating: nil, count: asks.count)
            for try await (i, r) in group { out[i] = r }
            return out.compactMap { $0 }
        }
        #expect(together.map(\.text) == alone)
        #expect(together.map(\.metrics.batchRowsMax).max()! >= 2)
    }

    @Test func sessionFilesAndThePrefixCache() async throws {
        let model = try await Model.load(Repo.smolLM2, options: LoadOptions(contextLength: 2048, prefixCacheBytes: 256 << 20))
        defer { model.close() }
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("session.safetensors").path
        let session = try model.makeSession()
        let empty = await thrown { try session.save(to: path) }
        #expect(libraryMessage(try #require(empty)).contains("no cache"))
        let first = try await session.chat(Self.question, options: GenerateOptions(maxTokens: 12)).collect().text
        try session.save(to: path)
        let loaded = try model.loadSession(from: path)
        let turn2 = Self.question + [.assistant(first), .user("And of Italy?")]
        let want = try await session.chat(turn2, options: GenerateOptions(maxTokens: 12)).collect()
        let got = try await loaded.chat(turn2, options: GenerateOptions(maxTokens: 12)).collect()
        #expect(got.text == want.text)
        #expect(got.metrics.promptTokensEvaluated < got.metrics.promptTokens)
        // The prefix cache: the same question again evaluates one token.
        let again = try await model.chat(Self.question, options: GenerateOptions(maxTokens: 4)).collect()
        let third = try await model.chat(Self.question, options: GenerateOptions(maxTokens: 4)).collect()
        #expect(again.metrics.promptTokensEvaluated >= 1 && third.metrics.promptTokensEvaluated == 1)
        #expect(try model.clearPrefixCache() > 0)
        #expect(try model.clearPrefixCache() == 0)
    }
}
