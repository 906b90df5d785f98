import CGoMLX
import Foundation

/// A value that several threads share, guarded by a lock.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// A library handle (a model or a chat session) that any thread may use and
/// one may close. `use` runs a call with the live pointer; `close` stops new
/// calls, waits for the running ones, then frees the handle once.
final class SharedHandle: @unchecked Sendable {
    // `pointer` and `users` are guarded by `condition`.
    private let condition = NSCondition()
    private var pointer: OpaquePointer?
    private var users = 0
    private let release: @Sendable (OpaquePointer) -> Void

    init(_ pointer: OpaquePointer, release: @escaping @Sendable (OpaquePointer) -> Void) {
        self.pointer = pointer
        self.release = release
    }

    var isClosed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return pointer == nil
    }

    func use<R>(_ body: (OpaquePointer) throws -> R) throws -> R {
        condition.lock()
        guard let p = pointer else {
            condition.unlock()
            throw GoMLXError.closed
        }
        users += 1
        condition.unlock()
        defer {
            condition.lock()
            users -= 1
            if users == 0 { condition.broadcast() }
            condition.unlock()
        }
        return try body(p)
    }

    func close() {
        condition.lock()
        guard let p = pointer else {
            condition.unlock()
            return
        }
        pointer = nil
        while users > 0 { condition.wait() }
        condition.unlock()
        release(p)
    }
}

/// C memory for one call (the strings and arrays handed to the library),
/// freed when the arena goes away.
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit { for b in blocks { free(b) } }

    /// A NUL-terminated copy of `s`; `what` names it in the error when `s`
    /// holds a NUL byte (C would silently cut the string there).
    func string(_ s: String, _ what: String) throws -> UnsafePointer<CChar> {
        if s.utf8.contains(0) { throw GoMLXError.invalidArgument("\(what) contains a NUL byte") }
        guard let p = strdup(s) else { fatalError("gomlx: out of memory") }
        blocks.append(UnsafeMutableRawPointer(p))
        return UnsafePointer(p)
    }

    /// ``string(_:_:)`` for an optional string: NULL for nil.
    func optionalString(_ s: String?, _ what: String) throws -> UnsafePointer<CChar>? {
        guard let s else { return nil }
        return try string(s, what)
    }

    /// An array of C strings, or NULL when `strings` is empty.
    func strings(_ strings: [String], _ what: String) throws -> UnsafePointer<UnsafePointer<CChar>?>? {
        let pointers = try strings.enumerated().map { i, s -> UnsafePointer<CChar>? in
            try string(s, "\(what)[\(i)]")
        }
        return array(pointers)
    }

    /// A copy of `values` (plain C values only), or NULL when it is empty.
    func array<T>(_ values: [T]) -> UnsafePointer<T>? {
        if values.isEmpty { return nil }
        guard let raw = malloc(MemoryLayout<T>.stride * values.count) else { fatalError("gomlx: out of memory") }
        blocks.append(raw)
        let p = raw.bindMemory(to: T.self, capacity: values.count)
        p.initialize(from: values, count: values.count)
        return UnsafePointer(p)
    }

    /// Token-id prompts as the parallel pointer and length arrays the library takes.
    func prompts(_ prompts: [[UInt32]]) -> (UnsafePointer<UnsafePointer<UInt32>?>?, UnsafePointer<Int>?) {
        (array(prompts.map { array($0) }), array(prompts.map(\.count)))
    }
}

/// `value` for a size the library takes as `size_t`, where nil (and 0) mean
/// its default; a negative value is an error.
func size(_ value: Int?, _ what: String) throws -> Int {
    guard let value else { return 0 }
    guard value >= 0 else { throw GoMLXError.invalidArgument("\(what) must not be negative (got \(value))") }
    return value
}

/// Runs `body`, which blocks in the library, on a thread of its own (never on
/// one of Swift concurrency's few cooperative threads) and returns its result.
/// Errors are read on that thread, right after the failing call.
func onOwnThread<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        startThread(name) { continuation.resume(with: Result { try body() }) }
    }
}

/// Starts a thread running `body`, with a stack of 8 MiB (the main thread's:
/// MLX runs its graph work on the calling thread in `LoRA.train`).
func startThread(_ name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = name
    thread.stackSize = 8 << 20
    thread.start()
}

extension Duration {
    init(seconds: Double) {
        self = .nanoseconds(Int64((seconds * 1e9).rounded()))
    }
}
