import Foundation

// Synchronisation for tests: wait on the observed condition with a deadline,
// never on a fixed sleep that merely makes the condition likely.

/// Polls `condition` every `interval` seconds until it holds; returns the
/// seconds that took, or nil when `timeout` passed first (the condition is
/// tried once more at the deadline).
@discardableResult
public func waitUntil(timeout: Double, interval: Double = 0.01,
                      _ condition: () async throws -> Bool) async rethrows -> Double? {
    let start = Date()
    let deadline = start.addingTimeInterval(timeout)
    while true {
        if try await condition() { return Date().timeIntervalSince(start) }
        if Date() >= deadline { return nil }
        try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
    }
}

/// Like `waitUntil`, but throws `WaitTimeout` (naming `what`) when the
/// condition does not hold within `timeout`.
@discardableResult
public func waitFor(_ what: String, timeout: Double, interval: Double = 0.01,
                    _ condition: () async throws -> Bool) async throws -> Double {
    guard let seconds = try await waitUntil(timeout: timeout, interval: interval, condition) else {
        throw WaitTimeout(what: what, seconds: timeout)
    }
    return seconds
}

public struct WaitTimeout: Error, CustomStringConvertible {
    public let what: String
    public let seconds: Double
    public var description: String { "timed out after \(seconds) s waiting until \(what)" }
}

/// `body` must finish within `seconds`, else this throws `WaitTimeout` (the
/// test fails rather than hangs). The body runs unstructured and is cancelled
/// at the deadline, so one that ignores cancellation cannot hold the caller.
public func withDeadline<T: Sendable>(_ seconds: Double, _ what: String,
                                      _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let once = ResumeOnce<T>()
    return try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
        once.set(c)
        let work = Task {
            do { once.resume(with: .success(try await body())) } catch { once.resume(with: .failure(error)) }
        }
        Task {
            try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            once.resume(with: .failure(WaitTimeout(what: "\(what) finished", seconds: seconds)))
            work.cancel()
        }
    }
}

/// A continuation resumed at most once, by whichever side comes first.
public final class ResumeOnce<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, any Error>?
    private var early: Result<T, any Error>?

    public init() {}

    public func set(_ c: CheckedContinuation<T, any Error>) {
        let r: Result<T, any Error>? = lock.withLock {
            if let early { return early }
            continuation = c
            return nil
        }
        if let r { c.resume(with: r) }
    }

    public func resume(with result: Result<T, any Error>) {
        let c: CheckedContinuation<T, any Error>? = lock.withLock {
            if let c = continuation { continuation = nil; early = nil; return c }
            if early == nil { early = result }
            return nil
        }
        c?.resume(with: result)
    }
}
