import Devices
import NIOConcurrencyHelpers
import NIOCore

/// Transfers a queueing device finished, on its own thread (libusb's event
/// thread), waiting for the engine. The engine's one drainer takes them in
/// batches: one hop per wake-up brings in everything that finished
/// meanwhile, and posting never blocks the device's thread.
final class CompletionMailbox: Sendable {
    typealias Finished = (job: TransferJob, result: USBTransferResult)

    private struct State {
        var finished: [Finished] = []
        var waiter: CheckedContinuation<[Finished]?, Never>?
        var closed = false
    }

    private let state = NIOLockedValueBox(State())

    func post(_ job: TransferJob, _ result: USBTransferResult) {
        let wake = state.withLockedValue { s -> (CheckedContinuation<[Finished]?, Never>, [Finished])? in
            guard !s.closed else { return nil }
            s.finished.append((job, result))
            guard let waiter = s.waiter else { return nil }
            s.waiter = nil
            defer { s.finished = [] }
            return (waiter, s.finished)
        }
        if let (waiter, batch) = wake { waiter.resume(returning: batch) }
    }

    /// Everything finished since the last call, waiting for at least one;
    /// nil once closed.
    func next() async -> [Finished]? {
        await withCheckedContinuation { continuation in
            let ready = state.withLockedValue { s -> [Finished]?? in
                if s.closed { return .some(nil) }
                guard !s.finished.isEmpty else {
                    s.waiter = continuation
                    return .none
                }
                defer { s.finished = [] }
                return .some(s.finished)
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Ends the drainer; later posts are dropped.
    func close() {
        let waiter = state.withLockedValue { s in
            s.closed = true
            s.finished = []
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: nil)
    }
}
