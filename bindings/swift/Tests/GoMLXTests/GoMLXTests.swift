import XCTest
@testable import GoMLX

/// Mirrors bindings/go/gomlx_test.go: expectations come from the same
/// tests/c/expected.txt the C harness reads.
final class GoMLXTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../..").standardized
    static let chatPath = root.appendingPathComponent(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf").path
    let question = [Message.user("What is the capital of France?")]

    struct Case { let name: String; let inputs: [UInt32]; let greedy: [UInt32] }

    func expected() throws -> [String: Case] {
        let text = try String(contentsOf: Self.root.appendingPathComponent("tests/c/expected.txt"), encoding: .utf8)
        var out: [String: Case] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ").map(String.init)
            let n = Int(f[1])!
            let inputs = f[2..<2 + n].map { UInt32($0)! }
            let m = Int(f[2 + n])!
            let greedy = f[3 + n..<3 + n + m].map { UInt32($0)! }
            out[f[0]] = Case(name: f[0], inputs: inputs, greedy: greedy)
        }
        return out
    }

    func testVersion() {
        XCTAssertEqual(Library.abiVersion, UInt32(GM_ABI_VERSION))
        XCTAssertTrue(Library.version.contains("."))
    }

    func testChat() async throws {
        let model = try Model(path: Self.chatPath)
        defer { model.close() }
        XCTAssertEqual(model.info.architecture, "llama")
        XCTAssertEqual(model.info.numLayers, 30)
        XCTAssertTrue(model.info.hasTokenizer)
        var text = ""
        var ids: [UInt32] = []
        var opts = GenerateOptions()
        opts.maxTokens = 32
        for try await t in model.chat(question, options: opts) {
            text += t.text
            ids.append(t.id)
        }
        XCTAssertEqual(text, "The capital of France is Paris.")
        XCTAssertEqual(ids, try expected()["smollm2_chat"]!.greedy)
    }

    func testStop() async throws {
        let model = try Model(path: Self.chatPath)
        var opts = GenerateOptions()
        opts.stop = ["Paris"]
        var text = ""
        for try await t in model.chat(question, options: opts) { text += t.text }
        XCTAssertEqual(text, "The capital of France is ")
    }

    func testClassify() throws {
        let model = try Model(path: Self.chatPath)
        let labels = [" Paris", " London", " Rome"]
        let res = try model.classify(
            ["The capital of France is", "The capital of England is", "The capital of Italy is"], labels: labels)
        for (i, r) in res.enumerated() {
            XCTAssertEqual(r.label, i)
            XCTAssertEqual(r.text, labels[i])
            XCTAssertEqual(r.labelProbs.reduce(0, +), 1, accuracy: 1e-4)
        }
        XCTAssertThrowsError(try model.classify(["x"], labels: [" Paris", " Paris is"])) { e in
            XCTAssertTrue("\(e)".contains("same token"))
        }
    }

    func testTaskCancellation() async throws {
        let model = try Model(path: Self.chatPath)
        var opts = GenerateOptions()
        opts.maxTokens = 1500
        opts.ignoreEOS = true
        let task = Task { () -> Int in
            var n = 0
            do {
                for try await _ in model.chat(question, options: opts) {
                    n += 1
                    if n == 3 { withUnsafeCurrentTask { $0?.cancel() } }
                }
            } catch {}
            return n
        }
        let n = await task.value
        XCTAssertLessThan(n, 100)
    }

    func testConcurrent() async throws {
        let model = try Model(path: Self.chatPath)
        let q = question
        try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var text = ""
                    for try await t in model.chat(q) { text += t.text }
                    return text
                }
            }
            for try await text in group { XCTAssertEqual(text, "The capital of France is Paris.") }
        }
    }

    func testCloseWhileStreaming() async throws {
        let model = try Model(path: Self.chatPath)
        var opts = GenerateOptions()
        opts.maxTokens = 1500
        opts.ignoreEOS = true
        var n = 0
        do {
            for try await _ in model.chat(question, options: opts) {
                n += 1
                if n == 1 { model.close() }
            }
            XCTFail("the stream must end with an error")
        } catch {
            XCTAssertTrue("\(error)".contains("the model was closed"))
        }
        XCTAssertThrowsError(try model.classify(["x"]))
    }

    func testErrors() throws {
        XCTAssertThrowsError(try Model(path: "/nonexistent/model")) { e in
            XCTAssertEqual((e as? GoMLXError)?.operation, "gm_model_load")
        }
        let fixture = Self.root.appendingPathComponent("tests/fixtures/models/llama_tied").path
        let model = try Model(path: fixture, device: .cpu)
        XCTAssertFalse(model.info.hasTokenizer)
        XCTAssertThrowsError(try model.classify(["hello"])) { e in
            XCTAssertTrue("\(e)".contains("no tokenizer"))
        }
    }

    func testMemoryBackAtBaseline() throws {
        let base = Memory.active
        do {
            let model = try Model(path: Self.chatPath)
            _ = try model.classify(["The capital of France is"])
        } // deinit closes it
        Memory.clearCache()
        XCTAssertEqual(Memory.active, base)
    }
}
