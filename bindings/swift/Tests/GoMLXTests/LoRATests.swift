import Foundation
import Testing

@testable import GoMLX

extension GoMLXTests {
    /// Mirrors bindings/go/lora_test.go: adapters mlx-lm wrote give mlx-lm's
    /// logits (tests/c/expected_lora.txt, from scripts/lora-oracle); training
    /// llama_tied with the character tokenizer lowers the loss, and the
    /// progress callback or a task cancel stops it early with the right reason.
    @Suite struct LoRATests {
        struct LoRACase: Sendable {
            let name, model, adapter: String
            let ids: [UInt32]
            let logits: [Float]
        }

        static func loraCases() throws -> [LoRACase] {
            try expectedLines("expected_lora.txt").map { f in
                let n = try #require(Int(f[3]))
                let v = try #require(Int(f[4 + n]))
                try #require(f.count == 5 + n + v)
                return LoRACase(name: String(f[0]), model: String(f[1]), adapter: String(f[2]),
                                ids: try f[4..<4 + n].map { try #require(UInt32($0)) },
                                logits: try f[(5 + n)...].map { try #require(Float($0)) })
            }
        }

        func lastLogits(_ model: Model, _ ids: [UInt32]) async throws -> [Float] {
            try await model.classify(tokens: [ids], options: ClassifyOptions(logits: true))[0].logits
        }

        @Test func adapterGivesMLXLMLogits() async throws {
            let cases = try Self.loraCases()
            #expect(cases.count >= 6)
            for c in cases {
                let tuned = try Model(path: Repo.path(c.model), options: LoadOptions(device: .cpu, adapterPath: Repo.path(c.adapter)))
                #expect(relativeError(try await lastLogits(tuned, c.ids), c.logits) < 1e-4, "\(c.name)")
                tuned.close()
                let plain = try Model(path: Repo.path(c.model), options: LoadOptions(device: .cpu))
                #expect(relativeError(try await lastLogits(plain, c.ids), c.logits) > 1e-3, "\(c.name)")
                plain.close()
            }
            let error = await thrown {
                try Model(path: Repo.fixtureModel("llama_tied"),
                          options: LoadOptions(adapterPath: Repo.path("tests/fixtures/lora/gemma3_text/adapter")))
            }
            guard case .library(let function, let message)? = error as? GoMLXError else {
                Issue.record("adapter error \(String(describing: error))")
                return
            }
            #expect(function == "gm_model_load")
            #expect(message.contains("does not fit the model"))
        }

        /// llama_tied with the character tokenizer and a counting data set.
        struct Fixture {
            let dir: URL
            var model: String { dir.appendingPathComponent("model").path }
            var data: String { dir.appendingPathComponent("train.jsonl").path }
            func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

            init() throws {
                dir = try temporaryDirectory()
                let model = dir.appendingPathComponent("model")
                try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
                for f in ["models/llama_tied/config.json", "models/llama_tied/model.safetensors",
                          "lora/tokenizer/tokenizer.json", "lora/tokenizer/tokenizer_config.json"] {
                    let src = URL(fileURLWithPath: Repo.path("tests/fixtures/\(f)"))
                    try FileManager.default.copyItem(at: src, to: model.appendingPathComponent(src.lastPathComponent))
                }
                let lines = (0..<12).map { "{\"prompt\": \"count \($0)\", \"completion\": \"\($0 + 1) \($0 + 2) \($0 + 3)\"}" }
                try (lines.joined(separator: "\n") + "\n").write(to: dir.appendingPathComponent("train.jsonl"),
                                                                 atomically: true, encoding: .utf8)
            }

            func remove() { try? FileManager.default.removeItem(at: dir) }

            func options(_ adapters: String) -> LoRAOptions {
                LoRAOptions(adapterPath: path(adapters), targets: ["q_proj", "v_proj", "down_proj"], iterations: 12,
                            batchSize: 4, rank: 4, learningRate: 1e-2, seed: 3)
            }
        }

        @Test func trainWithAProgressCallback() async throws {
            let fx = try Fixture()
            defer { fx.remove() }
            let seen = Locked<[LoRAProgress]>([])
            let result = try await LoRA.train(model: fx.model, data: fx.data, options: fx.options("adapters")) { p in
                seen.withLock { $0.append(p) }
                return true
            }
            let steps = seen.withLock { $0 }
            #expect(steps.map(\.step) == Array(1...12))
            #expect(steps.allSatisfy { $0.iterations == 12 && $0.trainedTokens > 0 && $0.validationLoss == nil })
            #expect(result.steps == 12)
            #expect(result.stop == .completed)
            #expect(result.firstLoss == steps[0].loss)
            #expect(result.lastLoss == steps[11].loss)
            #expect(result.lastLoss < 0.8 * result.firstLoss, "the loss did not fall")
            #expect(result.trainedTokens > 0 && result.peakMemory > 0 && result.duration > .zero)
            #expect(result.lastValidationLoss == nil)

            // The saved adapter loads back and changes the model.
            let ids: [UInt32] = [40, 50, 60, 70]
            let base = try Model(path: fx.model, options: LoadOptions(device: .cpu))
            let tuned = try Model(path: fx.model, options: LoadOptions(device: .cpu, adapterPath: fx.path("adapters")))
            #expect(relativeError(try await lastLogits(tuned, ids), try await lastLogits(base, ids)) > 1e-3,
                    "the trained adapter changes nothing")
            base.close()
            tuned.close()
        }

        @Test func callbackAndTaskCancellationStopTraining() async throws {
            let fx = try Fixture()
            defer { fx.remove() }
            // The callback stops after step 3; the adapters are still saved.
            let stopped = try await LoRA.train(model: fx.model, data: fx.data, options: fx.options("stopped")) { $0.step < 3 }
            #expect(stopped.steps == 3)
            #expect(stopped.stop == .stoppedByCallback)
            #expect(FileManager.default.fileExists(atPath: fx.path("stopped/adapters.safetensors")))

            // The task is cancelled during step 2's callback: step 3 sees it,
            // the callback is not called again, and the adapters are saved.
            let task = Locked<Task<LoRAResult, any Error>?>(nil)
            let ready = DispatchSemaphore(value: 0)
            let calls = Locked<[Int]>([])
            let training = Task {
                try await LoRA.train(model: fx.model, data: fx.data, options: fx.options("cancelled")) { p in
                    calls.withLock { $0.append(p.step) }
                    if p.step == 1 { ready.wait() }
                    if p.step == 2 { task.withLock { $0 }?.cancel() }
                    return true
                }
            }
            task.withLock { $0 = training }
            ready.signal()
            let cancelled = try await training.value
            #expect(cancelled.steps == 3)
            #expect(cancelled.stop == .cancelled)
            #expect(calls.withLock { $0 } == [1, 2])
            #expect(FileManager.default.fileExists(atPath: fx.path("cancelled/adapters.safetensors")))

            // A cancelled task never starts.
            let never = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return await thrown { try await LoRA.train(model: fx.model, data: fx.data, options: fx.options("never")) }
            }
            #expect(await never.value is CancellationError)
            #expect(!FileManager.default.fileExists(atPath: fx.path("never")))
        }

        @Test func trainingEventsStream() async throws {
            let fx = try Fixture()
            defer { fx.remove() }
            var steps: [Int] = []
            var finished: LoRAResult?
            for try await event in LoRA.training(model: fx.model, data: fx.data, options: fx.options("streamed")) {
                switch event {
                case .progress(let p): steps.append(p.step)
                case .finished(let r): finished = r
                }
            }
            let result = try #require(finished)
            #expect(steps == Array(1...12))
            #expect(result.steps == 12 && result.stop == .completed)

            // Leaving the loop stops training after the step in progress.
            var options = fx.options("left")
            options.iterations = 1000
            var seen = 0
            for try await event in LoRA.training(model: fx.model, data: fx.data, options: options) {
                if case .progress = event { seen += 1 }
                if seen == 2 { break }
            }
            #expect(seen == 2)
            // The run ends after at most one more step and saves what it has.
            for _ in 0..<600 where !FileManager.default.fileExists(atPath: fx.path("left/adapters.safetensors")) {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(FileManager.default.fileExists(atPath: fx.path("left/adapters.safetensors")))
        }

        @Test func trainingErrorsCarryTheLibraryMessage() async throws {
            let fx = try Fixture()
            defer { fx.remove() }
            let missing = await thrown { try await LoRA.train(model: fx.model, data: "/nonexistent/train.jsonl", options: fx.options("a")) }
            guard case .library(let function, let message)? = missing as? GoMLXError else {
                Issue.record("missing data error \(String(describing: missing))")
                return
            }
            #expect(function == "gm_lora_train")
            #expect(message.contains("/nonexistent/train.jsonl"))

            var o = fx.options("b")
            o.targets = ["q_proj", "nose"]
            #expect(libraryMessage(try #require(await thrown { try await LoRA.train(model: fx.model, data: fx.data, options: o) }))
                .contains("unknown LoRA target 'nose'"))
            o = fx.options("c")
            o.iterations = -1
            #expect(await thrown { try await LoRA.train(model: fx.model, data: fx.data, options: o) } as? GoMLXError
                == .invalidArgument("iterations must not be negative (got -1)"))
            #expect(libraryMessage(try #require(await thrown { try await LoRA.train(model: fx.model, data: fx.data) }))
                .contains("nowhere to save"))
            var streamError: (any Error)?
            do {
                for try await _ in LoRA.training(model: fx.model, data: fx.data) {}
            } catch {
                streamError = error
            }
            #expect(libraryMessage(try #require(streamError)).contains("nowhere to save"))
        }
    }
}
