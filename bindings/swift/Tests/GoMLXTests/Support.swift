import Foundation
import Testing

@testable import GoMLX

/// Paths in the repository (the package is bindings/swift).
enum Repo {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../..").standardized

    static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    /// The real model of the Go and C suites (scripts/fetch-models).
    static let smolLM2 = path(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")

    static func fixtureModel(_ name: String) -> String { path("tests/fixtures/models/\(name)") }
}

/// The fields of each line of tests/c/<name> that is not empty or a comment.
func expectedLines(_ name: String) throws -> [[Substring]] {
    let text = try String(contentsOfFile: Repo.path("tests/c/\(name)"), encoding: .utf8)
    return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { $0.split(separator: " ") }
}

/// One line of tests/c/expected.txt: the prompt ids and the greedy ids that
/// the C harness and the Go tests expect (made from the fixtures by tests/c_expected.rs).
struct GreedyCase: Sendable {
    let name: String
    let inputs: [UInt32]
    let greedy: [UInt32]

    static func all() throws -> [String: GreedyCase] {
        var out: [String: GreedyCase] = [:]
        for f in try expectedLines("expected.txt") {
            var at = 1
            func ids() throws -> [UInt32] {
                let n = try #require(Int(f[at]))
                defer { at += 1 + n }
                return try f[at + 1..<at + 1 + n].map { try #require(UInt32($0)) }
            }
            let inputs = try ids()
            out[String(f[0])] = GreedyCase(name: String(f[0]), inputs: inputs, greedy: try ids())
        }
        return out
    }

    static func named(_ name: String) throws -> GreedyCase { try #require(try all()[name]) }

    /// The fixture models (every case but the SmolLM2 chat one).
    static let fixtureNames: [String] = ((try? all()) ?? [:]).keys.filter { $0 != "smollm2_chat" }.sorted()
}

/// SmolLM2, loaded once and shared by the tests that only read from it.
enum Shared {
    static let smolLM2: Result<Model, any Error> = {
        let model = Result { try Model(path: Repo.smolLM2, options: LoadOptions(contextLength: 2048)) }
        // Closed before the process exits: the test runner exits from a worker
        // thread right after the last test, and an engine still finishing a
        // cancelled generation's step then can hang OpenBLAS's exit-time thread
        // shutdown (see README.md, "Semantics").
        #if os(Linux)
        atexit { closeSharedModelOnAThread() }
        #endif
        return model
    }()
}

#if os(Linux)
/// Closes the shared model on a new thread and waits for it: by the time
/// `atexit` handlers run, the exiting thread's thread-local storage is gone,
/// which the library's calls need.
func closeSharedModelOnAThread() {
    var thread = pthread_t()
    guard pthread_create(&thread, nil, { _ in
        if case .success(let model) = Shared.smolLM2 { model.close() }
        return nil
    }, nil) == 0 else { return }
    pthread_join(thread, nil)
}
#endif

func smolLM2() throws -> Model { try Shared.smolLM2.get() }

let question = [Message.user("What is the capital of France?")]

/// max |a - b| / max |b|
func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    guard a.count == b.count, !a.isEmpty else { return .infinity }
    let scale = max(b.map(abs).max()!, 1e-12)
    return zip(a, b).map { abs($0 - $1) }.max()! / scale
}

/// The library message of a thrown error, "" for anything else.
func libraryMessage(_ error: any Error) -> String {
    if case GoMLXError.library(_, let message) = error { return message }
    return ""
}

/// Runs `body` and returns what it threw (nil when it did not throw).
func thrown<T>(_ body: () async throws -> T) async -> (any Error)? {
    do {
        _ = try await body()
        return nil
    } catch {
        return error
    }
}

/// A fresh temporary directory, removed by the caller.
func temporaryDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gomlx-swift-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}
