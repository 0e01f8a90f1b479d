import Devices
import NIOConcurrencyHelpers
import NIOCore

/// Transfers a device finished on its own thread (libusb's event thread,
/// the stick's file-I/O pool), waiting for the session's loop. The first
/// completion of a batch schedules one turn of the loop (`post` returns
/// true), which takes everything that finished meanwhile: one hop per
/// batch, no task, and posting never blocks the device's thread.
final class CompletionMailbox: Sendable {
    typealias Finished = (job: TransferJob, result: USBTransferResult)

    private struct State {
        var finished: [Finished] = []
        var scheduled = false
        var closed = false
    }

    private let state = NIOLockedValueBox(State())

    /// Adds a completion; true when the caller must schedule the turn that
    /// takes them (none is scheduled yet).
    func post(_ job: TransferJob, _ result: USBTransferResult) -> Bool {
        state.withLockedValue { s in
            guard !s.closed else { return false }
            s.finished.append((job, result))
            guard !s.scheduled else { return false }
            s.scheduled = true
            return true
        }
    }

    /// Everything finished since the last call; the next post schedules anew.
    func take() -> [Finished] {
        state.withLockedValue { s in
            s.scheduled = false
            defer { s.finished = [] }
            return s.finished
        }
    }

    /// Later posts are dropped.
    func close() {
        state.withLockedValue { s in
            s.closed = true
            s.finished = []
        }
    }
}
