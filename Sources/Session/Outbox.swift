import NIOConcurrencyHelpers
import NIOCore
import Transport

/// What the engine has handed to the connection and the connection has not
/// written yet, in the order the engine said it. The engine hands every
/// packet over synchronously, on the actor (no suspension between deciding
/// to send and taking its place in line), so a stream packet read before a
/// stop can never land after the stop's status. The transport writes in that
/// order and reports each packet written through `progress`, from its own
/// thread; the engine collects those reports when it next looks (or when a
/// waiter asked to be woken), so a written reply costs no hop back to it.
struct Outbox {
    struct Item {
        var bytes: Int
        /// Released once its bytes are written.
        var permit: InFlightBudget.Permit?
    }

    let progress = WriteProgress()
    private(set) var inTransit = CircularBuffer<Item>()
    private(set) var queuedBytes = 0
    /// Items handed over and items written (or dropped), for `flushed`.
    private(set) var appended = 0
    private(set) var finished = 0
    /// The connection failed a write or ended: nothing more goes out.
    private(set) var broken = false
    /// Packets appended and not handed to the connection yet.
    private(set) var held: [OutgoingPacket] = []
    var flushWaiters: [(mark: Int, continuation: CheckedContinuation<Bool, Never>)] = []
    var roomWaiters: [CheckedContinuation<Void, Never>] = []

    /// Records a packet for the connection (sent by `takeHeld`).
    mutating func append(_ item: Item, _ packet: OutgoingPacket) {
        inTransit.append(item)
        queuedBytes += item.bytes
        appended += 1
        held.append(packet)
    }

    /// The packets to hand over now, and the sequence number (1, 2, ...) of
    /// the last, which the transport's report will name.
    mutating func takeHeld() -> (packets: [OutgoingPacket], last: Int)? {
        guard !held.isEmpty else { return nil }
        defer { held.removeAll(keepingCapacity: true) }
        return (held, appended)
    }

    /// Takes the items the transport has written since the last call;
    /// returns their permits to release. A failed write breaks the outbox.
    mutating func collectWritten() -> [InFlightBudget.Permit] {
        let (written, failed) = progress.snapshot()
        var permits: [InFlightBudget.Permit] = []
        while finished < written, let item = inTransit.popFirst() {
            finished += 1
            queuedBytes -= item.bytes
            if let p = item.permit { permits.append(p) }
        }
        if failed { permits += breakDown() }
        return permits
    }

    /// Drops what is in transit (the connection is gone); returns the permits to release.
    mutating func breakDown() -> [InFlightBudget.Permit] {
        broken = true
        held.removeAll()
        let permits = inTransit.compactMap(\.permit)
        finished += inTransit.count
        queuedBytes = 0
        inTransit.removeAll()
        return permits
    }

    /// Flush waiters whose items are all written (or dropped).
    mutating func takeFlushed() -> [(mark: Int, continuation: CheckedContinuation<Bool, Never>)] {
        let done = flushWaiters.filter { $0.mark <= finished }
        flushWaiters.removeAll { $0.mark <= finished }
        return done
    }
}

/// The transport's side of the outbox: how many packets are written (they
/// complete in order), whether a write failed, and a one-shot wake-up the
/// engine arms when it waits for writes.
final class WriteProgress: Sendable {
    private struct State {
        var written = 0
        var failed = false
        var wake: (@Sendable () -> Void)?
    }

    private let state = NIOLockedValueBox(State())

    /// Called by the transport for packet `sequence`.
    func record(_ sequence: Int, ok: Bool) {
        let wake = state.withLockedValue { s -> (@Sendable () -> Void)? in
            s.written = max(s.written, sequence)
            if !ok { s.failed = true }
            defer { s.wake = nil }
            return s.wake
        }
        wake?()
    }

    func snapshot() -> (written: Int, failed: Bool) {
        state.withLockedValue { ($0.written, $0.failed) }
    }

    /// `wake` runs at the next report (once).
    func arm(_ wake: @escaping @Sendable () -> Void) {
        state.withLockedValue { $0.wake = wake }
    }
}
