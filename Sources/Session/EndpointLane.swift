import NIOCore

/// The transfers of one endpoint of a device that takes one at a time:
/// they run in order, the next one starting when the last completes, so a
/// pending bulk IN never delays another endpoint or control.
struct EndpointLane {
    /// Jobs waiting for the one running now.
    var waiting = CircularBuffer<TransferJob>()
    /// The serial of the job on the device now.
    var running: UInt64?

    var isIdle: Bool { running == nil && waiting.isEmpty }
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
