import NIOConcurrencyHelpers

/// Waits for `body` at most `seconds`; true when it finished in time. The
/// body runs in its own task, which is left to end by itself on a timeout
/// (a task group would wait for it, which is what a deadline must not do).
func completes(within seconds: Double, _ body: @escaping @Sendable () async -> Void) async -> Bool {
    let waiter = NIOLockedValueBox<CheckedContinuation<Bool, Never>?>(nil)
    let resume: @Sendable (Bool) -> Void = { finished in
        waiter.withLockedValue { c in
            c?.resume(returning: finished)
            c = nil
        }
    }
    return await withCheckedContinuation { continuation in
        waiter.withLockedValue { $0 = continuation }
        Task { await body(); resume(true) }
        Task {
            try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            resume(false)
        }
    }
}
