import CGoMLX
import Foundation

/// An error from GoMLX.
///
/// Failed library calls carry the engine's own message (`gm_last_error`);
/// argument checks of the wrapper and use after `close()` have cases of
/// their own. A cancelled task surfaces as `CancellationError` instead.
///
/// ```swift
/// do {
///     let model = try Model(path: "missing.gguf")
/// } catch GoMLXError.library(let function, let message) {
///     print(function, message)    // gm_model_load, the engine's reason
/// }
/// ```
public enum GoMLXError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A library call failed. `function` is the C entry point
    /// (`"gm_model_load"`, `"gm_generate_next"`, ...), `message` the
    /// engine's description of what went wrong.
    case library(function: String, message: String)
    /// The model or chat session was closed before the call.
    case closed
    /// An argument the library cannot take: a string holding a NUL byte, a
    /// negative count, template arguments that are not valid JSON, ...
    case invalidArgument(String)

    /// What went wrong, without the prefix that `description` adds.
    public var message: String {
        switch self {
        case .library(_, let message): message
        case .closed: "the model or session is closed"
        case .invalidArgument(let message): message
        }
    }

    public var description: String {
        switch self {
        case .library(let function, let message): "gomlx: \(function): \(message)"
        default: "gomlx: \(message)"
        }
    }
}

extension GoMLXError: LocalizedError {
    public var errorDescription: String? { description }
}

/// The calling thread's last error (`gm_last_error` is thread-local): call it
/// right after the failing call, on the same thread, with no `await` between.
func lastError(_ function: String) -> GoMLXError {
    .library(function: function, message: gm_last_error().map { String(cString: $0) } ?? "unknown error")
}
