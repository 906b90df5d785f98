import Foundation
import Testing

@testable import GoMLX

/// Mirrors bindings/go/gomlx_test.go; the expected token ids come from the
/// same tests/c/expected.txt the C harness reads. Serialized: several tests
/// measure process-wide memory or count engine steps.
@Suite(.serialized)
struct GoMLXTests {
    @Test func versionAndDevices() {
        #expect(Library.abiVersion == Library.headerABIVersion)
        #expect(Library.abiVersion == 1)
        #expect(Library.version.split(separator: ".").count == 3)
        #expect(Library.isAvailable(.cpu))
        #expect(Library.isAvailable(.automatic))
    }

    @Test func everyFixtureIsListed() {
        #expect(GreedyCase.fixtureNames.count >= 10)
    }

    /// Each fixture model on the CPU gives the C harness's greedy tokens,
    /// its metrics, and the same first token from classify.
    @Test(arguments: GreedyCase.fixtureNames)
    func fixture(_ name: String) async throws {
        let c = try GreedyCase.named(name)
        let model = try await Model.load(Repo.fixtureModel(name), options: LoadOptions(device: .cpu))
        defer { model.close() }
        let info = model.info
        #expect(!info.hasTokenizer)
        #expect(info.vocabSize > 0 && info.numLayers > 0 && info.parameters > 0)
        #expect(info.device == .cpu)
        #expect(info.quantization?.bits == (name.hasSuffix("_q4") || name.hasSuffix("_mxfp4") ? 4 : name.hasSuffix("_q8") ? 8 : nil))

        let out = try await model.generate(tokens: c.inputs, options: GenerateOptions(maxTokens: c.greedy.count, ignoreEOS: true))
            .collect()
        #expect(out.tokens == c.greedy)
        #expect(out.text == "")
        #expect(out.metrics.finishReason == .length)
        #expect(out.metrics.promptTokens == c.inputs.count)
        #expect(out.metrics.generatedTokens == c.greedy.count)
        #expect(out.metrics.decodeTokensPerSecond > 0)

        let answers = try await model.classify(tokens: [c.inputs], options: ClassifyOptions(logprobs: true))
        #expect(answers.count == 1)
        #expect(answers[0].token == c.greedy[0])
        #expect(try #require(answers[0].logprob) <= 0)
        #expect(answers[0].label == nil && answers[0].labelProbabilities.isEmpty)
        #expect(answers.metrics.prompts == 1)
        #expect(answers.metrics.promptTokens == c.inputs.count)
    }

    /// The real GGUF model streams the C harness's greedy tokens for the same
    /// chat through the AsyncThrowingStream behind `Generation`.
    @Test func chatStreamsTheHarnessTokens() async throws {
        let model = try smolLM2()
        let want = try GreedyCase.named("smollm2_chat")
        let info = model.info
        #expect(info.architecture == "llama")
        #expect(info.numLayers == 30)
        #expect(info.vocabSize == 49152)
        #expect(info.contextLength == 2048)
        #expect(info.hasTokenizer)
        #expect(info.quantization?.bits == 4)

        let reply = try model.chat(question, options: GenerateOptions(maxTokens: 32, logprobs: true, topLogprobs: 2))
        var text = ""
        var ids: [UInt32] = []
        for try await token in reply {
            let id = try #require(token.id)
            #expect(try #require(token.logprob) <= 0)
            #expect(token.topLogprobs.count == 2)
            #expect(token.topLogprobs.first?.id == id)
            text += token.text
            ids.append(id)
        }
        #expect(text == "The capital of France is Paris.")
        #expect(ids == want.greedy)

        let metrics = try await reply.metrics
        #expect(metrics.finishReason == .endOfSequence)
        #expect(metrics.promptTokens == want.inputs.count)
        #expect(metrics.generatedTokens == ids.count + 1)
        #expect(metrics.prefillTokensPerSecond > 0)
        #expect(metrics.timeToFirstToken > .zero)
        #expect(metrics.peakMemory >= metrics.activeMemory)

        // A generation is read once: a second loop ends at once.
        var again = 0
        for try await _ in reply { again += 1 }
        #expect(again == 0)
    }

    @Test func stopStringsAndSessions() async throws {
        let model = try smolLM2()
        let stopped = try await model.chat(question, options: GenerateOptions(stop: ["Paris"])).collect()
        #expect(stopped.text == "The capital of France is ")
        #expect(stopped.metrics.finishReason == .stop)

        let session = try model.makeSession()
        let reply = try await session.chat(question).collect().text
        #expect(reply == "The capital of France is Paris.")
        let second = try await session.chat(question + [.assistant(reply), .user("And of Italy?")]).collect()
        #expect(second.text.contains("Rome"))
        #expect(second.metrics.promptTokensEvaluated < second.metrics.promptTokens)
        session.close()
        session.close()
        #expect(throws: GoMLXError.closed) { try session.chat(question) }
    }

    @Test func classifyWithLabels() async throws {
        let model = try smolLM2()
        let prompts = ["The capital of France is", "The capital of England is", "The capital of Italy is"]
        let labels = [" Paris", " London", " Rome"]
        let answers = try await model.classify(prompts, options: ClassifyOptions(labels: labels))
        #expect(answers.count == 3)
        for (i, answer) in answers.enumerated() {
            #expect(answer.label == i)
            #expect(answer.text == labels[i])
            #expect(answer.labelProbabilities.count == 3)
            #expect(abs(answer.labelProbabilities.reduce(0, +) - 1) < 1e-4)
            #expect(answer.labelProbabilities[i] == answer.labelProbabilities.max())
        }
        #expect(answers.metrics.prompts == 3)
        #expect(answers.metrics.promptsPerSecond > 0)
        #expect(answers.metrics.sharedPrefixTokens > 0)

        let plain = try await model.classify(prompts, options: ClassifyOptions(logits: true))
        #expect(plain.map(\.text) == labels)
        #expect(plain.allSatisfy { $0.label == nil && $0.logits.count == 49152 })

        let error = await thrown { try await model.classify(prompts, options: ClassifyOptions(labels: [" Paris", " Paris is"])) }
        #expect(libraryMessage(try #require(error)).contains("same token"))
    }

    @Test func batchGenerateMatchesSingleGenerations() async throws {
        let model = try smolLM2()
        let prompts = ["The capital of France is", "One, two, three,"]
        let batch = try await model.batchGenerate(prompts, options: GenerateOptions(maxTokens: 6))
        #expect(batch.count == 2)
        #expect(batch.metrics.generatedTokens == 12)
        #expect(batch.metrics.prompts == 2)
        for (i, prompt) in prompts.enumerated() {
            let single = try await model.generate(prompt, options: GenerateOptions(maxTokens: 6)).collect()
            #expect(single.text == batch[i].text)
            #expect(single.tokens == batch[i].tokens)
            #expect(batch[i].tokens.count == 6)
            #expect(batch[i].finishReason == .length)
        }
        let byIds = try await model.batchGenerate(tokens: [[1, 504, 3575]], options: GenerateOptions(maxTokens: 3))
        #expect(byIds[0].tokens.count == 3)
    }

    /// Task.cancel() on the consuming task stops the engine within one step.
    @Test func taskCancellationStopsWithinOneStep() async throws {
        let model = try smolLM2()
        let long = GenerateOptions(maxTokens: 1500, ignoreEOS: true)
        let reply = try model.chat(question, options: long)
        let consumer = Task {
            var n = 0
            for try await _ in reply {
                n += 1
                if n == 3 { withUnsafeCurrentTask { $0?.cancel() } }
            }
            return n
        }
        let n = try await consumer.value
        let metrics = try await reply.metrics
        let handedOver = try #require(reply.tokensAtCancel)
        #expect(metrics.finishReason == .cancelled)
        #expect(n >= 3 && n <= handedOver)
        // Tokens the engine made after the cancel: the step it was in, and
        // one more it may already have queued (it samples one step while the
        // next runs on the device).
        #expect(metrics.generatedTokens - handedOver <= 2)
        #expect(metrics.generatedTokens < 20)

        // A cancelled task does not start a generation.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return await thrown { try model.chat(question) }
        }
        #expect(await early.value is CancellationError)
    }

    @Test func leavingTheLoopOrCancelStops() async throws {
        let model = try smolLM2()
        let long = GenerateOptions(maxTokens: 1500, ignoreEOS: true)

        let left = try model.chat(question, options: long)
        for try await _ in left { break }
        #expect(try await left.metrics.finishReason == .cancelled)
        #expect(try await left.metrics.generatedTokens < 20)

        let cancelled = try model.chat(question, options: long)
        var n = 0
        for try await _ in cancelled {
            n += 1
            if n == 2 { Task { cancelled.cancel() } }
        }
        #expect(n >= 2 && n < 20)
        #expect(try await cancelled.metrics.finishReason == .cancelled)
    }

    @Test func severalTasksGenerateOnOneModel() async throws {
        let model = try smolLM2()
        let want = try GreedyCase.named("smollm2_chat").greedy
        let replies = try await withThrowingTaskGroup(of: GenerationResult.self) { group in
            for _ in 0..<8 {
                group.addTask { try await model.chat(question, options: GenerateOptions(maxTokens: 32)).collect() }
            }
            var all: [GenerationResult] = []
            for try await r in group { all.append(r) }
            return all
        }
        #expect(replies.count == 8)
        for r in replies {
            #expect(r.text == "The capital of France is Paris.")
            #expect(r.tokens == want)
        }
    }

    @Test func closeWhileStreaming() async throws {
        let model = try await Model.load(Repo.smolLM2)
        let reply = try model.chat(question, options: GenerateOptions(maxTokens: 1500, ignoreEOS: true))
        var n = 0
        let error = await thrown {
            for try await _ in reply {
                n += 1
                if n == 1 { model.close() }
            }
        }
        let e = try #require(error as? GoMLXError)
        guard case .library(let function, let message) = e else {
            Issue.record("stream error \(e)")
            return
        }
        #expect(function == "gm_generate_next")
        #expect(message.contains("the model was closed"))
        #expect(n < 100)
        #expect(await thrown { try await reply.metrics } as? GoMLXError == e)
        #expect(model.isClosed)
        model.close()
        #expect(throws: GoMLXError.closed) { try model.generate("x") }
        #expect(throws: GoMLXError.closed) { try model.makeSession() }
        #expect(await thrown { try await model.classify(["x"]) } as? GoMLXError == .closed)
    }

    @Test func errorsCarryTheLibraryMessage() async throws {
        let loadError = await thrown { try await Model.load("/nonexistent/model") }
        guard case .library(let function, let message)? = loadError as? GoMLXError else {
            Issue.record("load error \(String(describing: loadError))")
            return
        }
        #expect(function == "gm_model_load")
        #expect(message.contains("/nonexistent/model"))

        let fixture = Repo.fixtureModel("llama_tied")
        #expect(libraryMessage(try #require(await thrown {
            try Model(path: fixture, options: LoadOptions(adapterPath: "/nonexistent/adapter"))
        })).contains("adapter path /nonexistent/adapter: no such directory"))
        #expect(libraryMessage(try #require(await thrown {
            try Model(path: fixture, options: LoadOptions(dtype: "int4"))
        })).contains("unknown dtype"))
        #expect(throws: GoMLXError.invalidArgument("path contains a NUL byte")) { try Model(path: "a\0b") }

        let model = try Model(path: fixture, options: LoadOptions(device: .cpu))
        defer { model.close() }
        func startError(_ body: () throws -> Generation) -> String {
            do {
                _ = try body()
                return "no error"
            } catch {
                return libraryMessage(error)
            }
        }
        #expect(startError { try model.generate("hello") }.contains("no tokenizer"))
        #expect(startError { try model.chat(question) }.contains("no tokenizer"))
        #expect(startError { try model.generate(tokens: []) }.contains("empty"))
        #expect(startError { try model.generate(tokens: [1, 1 << 30]) }.contains("outside the vocabulary"))
        #expect(startError { try model.generate(tokens: [1], options: GenerateOptions(temperature: -1)) }.contains("temperature"))
        #expect(throws: GoMLXError.invalidArgument("maxTokens must not be negative (got -1)")) {
            try model.generate(tokens: [1], options: GenerateOptions(maxTokens: -1))
        }
        #expect(libraryMessage(try #require(await thrown { try await model.classify(["hello"]) })).contains("no tokenizer"))

        let smol = try smolLM2()
        #expect(throws: GoMLXError.invalidArgument("prompt contains a NUL byte")) { try smol.generate("a\0b") }
        #expect(throws: GoMLXError.invalidArgument("stop[1] contains a NUL byte")) {
            try smol.generate("a", options: GenerateOptions(stop: ["x", "\0"]))
        }
        #expect(startError { try smol.chat([]) }.contains("at least one message"))
        #expect(startError { try smol.chat([Message(role: "user", content: "")], options: GenerateOptions(chatTemplateArguments: ["x": 1])) } == "no error")
        let nan = await thrown { try smol.chat(question, options: GenerateOptions(chatTemplateArguments: ["x": .double(.nan)])) }
        guard case .invalidArgument(let why)? = nan as? GoMLXError else {
            Issue.record("template arguments error \(String(describing: nan))")
            return
        }
        #expect(why.hasPrefix("chatTemplateArguments are not valid JSON"))
        #expect(await thrown { try await smol.batchGenerate([]) } is GoMLXError)
        #expect(await thrown { try await smol.classify(["x"], options: ClassifyOptions(labels: [])) } as? GoMLXError
            == .invalidArgument("the label set is empty"))
        #expect(await thrown { try await smol.classify(["x"], options: ClassifyOptions(batchSize: -2)) } as? GoMLXError
            == .invalidArgument("batchSize must not be negative (got -2)"))

        // Descriptions read like the library's errors elsewhere.
        #expect(GoMLXError.library(function: "gm_model_load", message: "m").description == "gomlx: gm_model_load: m")
        #expect(GoMLXError.closed.localizedDescription == "gomlx: the model or session is closed")
    }

    @Test func discoverAndMemory() async throws {
        let found = try Model.discover(in: Repo.path("tests/fixtures/models"))
        #expect(found.count == GreedyCase.fixtureNames.count)
        #expect(found.map(\.path) == found.map(\.path).sorted())
        for d in found {
            #expect(!d.architecture.isEmpty)
            #expect(d.path.hasSuffix("_q4") == (d.quantization?.bits == 4))
        }
        #expect(found.contains { $0.path.hasSuffix("/llama_tied") && $0.architecture == "llama" })
        #expect(throws: GoMLXError.self) { try Model.discover(in: "/nonexistent") }

        let previous = Memory.setCacheLimit(1 << 30)
        #expect(Memory.setCacheLimit(previous) == 1 << 30)
        let limit = Memory.setLimit(1 << 40)
        #expect(Memory.setLimit(limit) == 1 << 40)
        // Engines of other tests may hand buffers back to MLX's cache meanwhile: bounded, not zero.
        Memory.clearCache()
        #expect(Memory.cache < 64 << 20)
        #expect(Memory.peak >= Memory.active)
        // MLX restarts the peak from zero; the next allocation raises it again.
        Memory.resetPeak()
        #expect(Memory.peak <= Memory.active)
        _ = try await smolLM2().generate("One", options: GenerateOptions(maxTokens: 2)).collect()
        #expect(Memory.peak > 0)
    }

    /// A loop of every kind of request, then close: MLX's active memory is
    /// back where it was before the model was loaded.
    @Test func memoryBackToBaselineAfterALoopOfRequests() async throws {
        Memory.clearCache()
        let baseline = Memory.active
        let model = try await Model.load(Repo.smolLM2)
        #expect(Memory.active > baseline)
        let session = try model.makeSession()
        var conversation = question
        for i in 0..<4 {
            let reply = try await model.chat([.user("Name a colour (\(i)).")], options: GenerateOptions(maxTokens: 8)).collect()
            #expect(reply.tokens.count <= 8)
            let answers = try await model.classify(["The capital of France is", "Two plus two is \(i)"],
                                                   options: ClassifyOptions(labels: [" Paris", " four"]))
            #expect(answers[0].label == 0)
            let batch = try await model.batchGenerate(["One, two,", "A, B,"], options: GenerateOptions(maxTokens: 4))
            #expect(batch.metrics.generatedTokens == 8)
            let turn = try await session.chat(conversation, options: GenerateOptions(maxTokens: 12)).collect()
            conversation += [.assistant(turn.text), .user("And number \(i)?")]
            for try await _ in try model.generate("Once upon a time", options: GenerateOptions(maxTokens: 100)) { break }
        }
        session.close()
        model.close()
        Memory.clearCache()
        #expect(Memory.active == baseline)
    }
}
