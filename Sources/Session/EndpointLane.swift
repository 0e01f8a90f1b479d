import NIOCore

/// The transfers of one endpoint, kept inside the engine: they run in order,
/// one at a time, on one long-lived worker task per endpoint, so a pending
/// bulk IN never delays another endpoint or control. The worker calls the
/// device directly and comes back to the engine once per transfer (to reply
/// and take the next job); when the lane is empty it parks on a continuation
/// instead of ending, so a ping-pong load creates no task per transfer.
struct EndpointLane {
    /// Jobs waiting for the one running now.
    var waiting = CircularBuffer<TransferJob>()
    /// The serial of the job the worker is running, for cancel_data_packet.
    var running: UInt64?
    var worker: Task<Void, Never>?
    /// The idle worker, waiting for the next job (nil: stop).
    var parked: CheckedContinuation<TransferJob?, Never>?
    /// The worker's task was cancelled to cancel its running transfer: it
    /// must not run another (every later await would see the cancellation).
    var workerCancelled = false

    /// Ends the worker: its running transfer is cancelled, a parked one resumes with nil.
    mutating func stop() {
        worker?.cancel()
        parked?.resume(returning: nil)
        parked = nil
        waiting.removeAll()
    }
}

/// Counts transfers and bytes in flight; the reader waits while a bound is
/// reached. One oversized request still gets through alone, so a single
/// transfer larger than the byte bound cannot wedge the session. Plain state
/// of the engine (no actor of its own: no extra hop per transfer).
struct InFlightBudget {
    /// What one transfer or stream packet holds until its reply is written:
    /// its bytes, and the epoch it was taken in.
    struct Permit: Sendable {
        let bytes: Int
        let epoch: Int
    }

    let maxTransfers: Int
    let maxBytes: Int
    private(set) var transfers = 0
    private(set) var bytes = 0
    /// Bumped by `reset`; releases of permits from before it are ignored.
    private(set) var epoch = 0
    var waiters: [CheckedContinuation<Void, Never>] = []

    init(maxTransfers: Int, maxBytes: Int) {
        self.maxTransfers = maxTransfers
        self.maxBytes = maxBytes
    }

    func admits(_ amount: Int) -> Bool {
        transfers < maxTransfers && (transfers == 0 || bytes + amount <= maxBytes)
    }

    mutating func take(_ amount: Int) -> Permit {
        transfers += 1
        bytes += amount
        return Permit(bytes: amount, epoch: epoch)
    }

    /// Gives a permit back; one taken before the last `reset` is ignored.
    mutating func release(_ permit: Permit) {
        guard permit.epoch == epoch else { return }
        transfers -= 1
        bytes -= permit.bytes
        wakeWaiters()
    }

    /// Forgets every permit (their transfers were dropped with the device).
    mutating func reset() {
        epoch += 1
        transfers = 0
        bytes = 0
        wakeWaiters()
    }

    /// Lets every waiter look again (also when the connection closed: they give up).
    mutating func wakeWaiters() {
        let woken = waiters
        waiters = []
        for w in woken { w.resume() }
    }
}
