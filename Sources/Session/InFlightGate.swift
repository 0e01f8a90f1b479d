/// Counts transfers and bytes in flight and makes the reader wait while a
/// bound is reached. One oversized request still gets through alone, so a
/// single transfer larger than the byte bound cannot wedge the session.
actor InFlightGate {
    private let maxTransfers: Int
    private let maxBytes: Int
    private var transfers = 0
    private var bytes = 0
    /// Bumped by `reset`; releases of permits from before it are ignored.
    private var epoch = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(maxTransfers: Int, maxBytes: Int) {
        self.maxTransfers = maxTransfers
        self.maxBytes = maxBytes
    }

    var load: (transfers: Int, bytes: Int) { (transfers, bytes) }

    /// Returns the epoch the permit belongs to.
    func acquire(bytes amount: Int) async -> Int {
        while transfers >= maxTransfers || (transfers > 0 && bytes + amount > maxBytes) {
            await withCheckedContinuation { waiters.append($0) }
        }
        transfers += 1
        bytes += amount
        return epoch
    }

    func release(bytes amount: Int, epoch permitEpoch: Int) {
        guard permitEpoch == epoch else { return }
        transfers -= 1
        bytes -= amount
        wakeAll()
    }

    /// Forgets every permit (their transfers were dropped with the device).
    func reset() {
        epoch += 1
        transfers = 0
        bytes = 0
        wakeAll()
    }

    private func wakeAll() {
        let woken = waiters
        waiters = []
        for w in woken { w.resume() }
    }
}
