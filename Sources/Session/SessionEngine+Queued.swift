import Devices
import NIOConcurrencyHelpers
import NIOCore

/// Transfers on the device. Each is submitted as the VM sent it (a device
/// that queues takes all of an endpoint's at once; the others get them one
/// at a time from the endpoint's lane). A device that answers from memory
/// completes inside `submit`, and the reply is made in the engine's own
/// turn; later completions come back through the mailbox, one turn of the
/// session's loop per batch.
extension SessionEngine {
    /// Submits `job` (`request` is its request); its completion is handled
    /// now when the device had it at once, else when the loop's turn takes
    /// it from the mailbox.
    func startOnDevice(_ job: TransferJob, _ request: USBTransferRequest) {
        let handoff = CompletionHandoff(job: job, engine: self)
        let transfer = job.device.submit(request) { handoff.finish($0) }
        if let result = handoff.takeIfFinished() {
            deviceFinished(job, result)
        } else if let transfer {
            running[job.serial] = transfer
        }
    }

    /// A transfer the device finished: replied to, and its lane's next job
    /// started (see `TransferBook.deviceCompleted`).
    func deviceFinished(_ job: TransferJob, _ result: USBTransferResult) {
        running[job.serial] = nil
        book.deviceCompleted(job, result)
        perform()
    }

    /// Cancels every transfer on the device; their completions, which carry
    /// the old generation, only give their permits back.
    func stopRunning() {
        for transfer in running.values { transfer.cancel() }
        running = [:]
    }

    /// Replies to the completions the mailbox holds, handed over together:
    /// the loop's turn a device thread's first completion scheduled.
    func deliverCompletions() {
        holdingFlushInTurn {
            for (job, result) in completions.take() { deviceFinished(job, result) }
        }
    }
}

/// Where a device's completion goes: kept for the engine when it comes
/// while `submit` is still running (the device answered at once: no hop),
/// posted to the mailbox when it comes later.
private final class CompletionHandoff: Sendable {
    private enum State {
        case submitting
        case finishedAtOnce(USBTransferResult)
        case waiting
    }

    private let job: TransferJob
    private let engine: SessionEngine
    private let state = NIOLockedValueBox(State.submitting)

    init(job: TransferJob, engine: SessionEngine) {
        self.job = job
        self.engine = engine
    }

    func finish(_ result: USBTransferResult) {
        let post = state.withLockedValue { s -> Bool in
            guard case .waiting = s else {
                s = .finishedAtOnce(result)
                return false
            }
            return true
        }
        guard post, engine.completions.post(job, result) else { return }
        let engine = self.engine
        engine.loop.eventLoop.execute { engine.assumeIsolated { $0.deliverCompletions() } }
    }

    /// The result when it came during `submit`; else later completions go to the mailbox.
    func takeIfFinished() -> USBTransferResult? {
        state.withLockedValue { s in
            if case .finishedAtOnce(let r) = s { return r }
            s = .waiting
            return nil
        }
    }
}
