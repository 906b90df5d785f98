import XCTest
@testable import GoMLX

/// Mirrors bindings/go/lora_test.go: adapters mlx-lm wrote give mlx-lm's logits
/// (tests/c/expected_lora.txt, from scripts/lora-oracle); LoRA.train on
/// llama_tied with the character tokenizer lowers the loss, and a callback stop
/// or a Task cancel stops it early with the right reason.
final class LoRATests: XCTestCase {
    static let root = GoMLXTests.root

    struct Case { let name, model, adapter: String; let ids: [UInt32]; let logits: [Float] }

    func expectedLoRA() throws -> [Case] {
        let text = try String(contentsOf: Self.root.appendingPathComponent("tests/c/expected_lora.txt"), encoding: .utf8)
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let f = line.split(separator: " ").map(String.init)
            let n = Int(f[3])!
            let ids = f[4..<4 + n].map { UInt32($0)! }
            let v = Int(f[4 + n])!
            let logits = f[5 + n..<5 + n + v].map { Float($0)! }
            return Case(name: f[0], model: f[1], adapter: f[2], ids: ids, logits: logits)
        }
    }

    /// max |a - b| / max |b|
    func relErr(_ a: [Float], _ b: [Float]) -> Float {
        guard a.count == b.count else { return .infinity }
        let scale = max(b.map(abs).max() ?? 0, 1e-12)
        return zip(a, b).map { abs($0 - $1) }.max()! / scale
    }

    func path(_ rel: String) -> String { Self.root.appendingPathComponent(rel).path }

    func testAdapterGivesMLXLMLogits() throws {
        let cases = try expectedLoRA()
        XCTAssertGreaterThanOrEqual(cases.count, 6)
        for c in cases {
            let m = try Model(path: path(c.model), device: .cpu, adapterPath: path(c.adapter))
            XCTAssertLessThan(relErr(try m.classifyTokens([c.ids], logits: true)[0].logits, c.logits), 1e-4, c.name)
            m.close()
            let plain = try Model(path: path(c.model), device: .cpu)
            XCTAssertGreaterThan(relErr(try plain.classifyTokens([c.ids], logits: true)[0].logits, c.logits), 1e-3, c.name)
            plain.close()
        }
        XCTAssertThrowsError(try Model(path: path("tests/fixtures/models/llama_tied"),
                                       adapterPath: path("tests/fixtures/lora/gemma3_text/adapter"))) { e in
            XCTAssertTrue("\(e)".contains("does not fit the model"))
        }
    }

    /// llama_tied with the character tokenizer and a counting data set: (model, data).
    func fixture() throws -> (String, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gomlx-swift-lora-\(UUID().uuidString)")
        let model = dir.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        for f in ["models/llama_tied/config.json", "models/llama_tied/model.safetensors",
                  "lora/tokenizer/tokenizer.json", "lora/tokenizer/tokenizer_config.json"] {
            let src = Self.root.appendingPathComponent("tests/fixtures/\(f)")
            try FileManager.default.copyItem(at: src, to: model.appendingPathComponent(src.lastPathComponent))
        }
        let lines = (0..<12).map { "{\"prompt\": \"count \($0)\", \"completion\": \"\($0 + 1) \($0 + 2) \($0 + 3)\"}" }
        let data = dir.appendingPathComponent("train.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: data, atomically: true, encoding: .utf8)
        return (model.path, data.path)
    }

    func options(_ adapters: String) -> LoRAOptions {
        var o = LoRAOptions()
        o.adapterPath = adapters
        o.targets = ["q_proj", "v_proj", "down_proj"]
        o.iters = 12
        o.batchSize = 4
        o.rank = 4
        o.learningRate = 1e-2
        o.seed = 3
        return o
    }

    func testTrainLoRA() throws {
        let (model, data) = try fixture()
        let adapters = (data as NSString).deletingLastPathComponent + "/adapters"
        var steps: [Int] = []
        var first: Float = .nan
        let r = try LoRA.train(model: model, data: data, options: options(adapters)) { p in
            steps.append(p.step)
            if p.step == 1 { first = p.loss }
            return true
        }
        XCTAssertEqual(r.steps, 12)
        XCTAssertEqual(r.stop, .completed)
        XCTAssertEqual(steps, Array(1...12))
        XCTAssertEqual(r.firstLoss, first)
        XCTAssertLessThan(r.lastLoss, 0.8 * r.firstLoss, "the loss did not fall")
        XCTAssertTrue(r.lastValLoss.isNaN)
        let ids: [UInt32] = [40, 50, 60, 70]
        let base = try Model(path: model, device: .cpu).classifyTokens([ids], logits: true)[0].logits
        let tuned = try Model(path: model, device: .cpu, adapterPath: adapters).classifyTokens([ids], logits: true)[0].logits
        XCTAssertGreaterThan(relErr(tuned, base), 1e-3, "the trained adapter changes nothing")
    }

    func testTrainLoRAStops() async throws {
        let (model, data) = try fixture()
        let dir = (data as NSString).deletingLastPathComponent
        let r = try LoRA.train(model: model, data: data, options: options(dir + "/stopped")) { $0.step < 3 }
        XCTAssertEqual(r.steps, 3)
        XCTAssertEqual(r.stop, .stoppedByCallback)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/stopped/adapters.safetensors"))

        // Cancelling the consuming Task ends the stream with CancellationError.
        var o = options(dir + "/cancelled")
        o.iters = 1000
        let task = Task { () -> (Int, Bool) in
            var n = 0
            do {
                for try await e in LoRA.trainStream(model: model, data: data, options: o) {
                    if case .progress = e { n += 1 }
                    if n == 2 { withUnsafeCurrentTask { $0?.cancel() } }
                }
            } catch is CancellationError {
                return (n, true)
            } catch {}
            return (n, false)
        }
        let (n, cancelled) = await task.value
        XCTAssertTrue(cancelled)
        XCTAssertLessThan(n, 100)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/cancelled/adapters.safetensors"))

        // A full stream ends with .finished.
        var last: LoRAEvent?
        for try await e in LoRA.trainStream(model: model, data: data, options: options(dir + "/streamed")) { last = e }
        guard case .finished(let fin) = last else { return XCTFail("no .finished event") }
        XCTAssertEqual(fin.steps, 12)
        XCTAssertEqual(fin.stop, .completed)
    }

    func testTrainLoRAErrors() throws {
        let (model, data) = try fixture()
        let dir = (data as NSString).deletingLastPathComponent
        XCTAssertThrowsError(try LoRA.train(model: model, data: "/nonexistent/train.jsonl", options: options(dir + "/a"))) { e in
            XCTAssertEqual((e as? GoMLXError)?.operation, "gm_lora_train")
            XCTAssertTrue("\(e)".contains("/nonexistent/train.jsonl"))
        }
        var o = options(dir + "/b")
        o.targets = ["q_proj", "nose"]
        XCTAssertThrowsError(try LoRA.train(model: model, data: data, options: o)) { e in
            XCTAssertTrue("\(e)".contains("unknown LoRA target 'nose'"))
        }
        XCTAssertThrowsError(try LoRA.train(model: model, data: data)) { e in
            XCTAssertTrue("\(e)".contains("nowhere to save"))
        }
    }
}
