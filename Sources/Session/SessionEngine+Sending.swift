import NIOCore
import Transport
import USBRedirProtocol

/// Sending to the VM: the engine hands each packet to the connection at once,
/// on the actor, in the order it decides (the transport keeps that order);
/// the outbox remembers what is not written yet, and what it holds (its
/// permits) is given back when the engine next collects the transport's
/// progress. Nothing runs per packet besides the transport's own write.
extension SessionEngine {
    /// Bytes not yet written beyond which a sender without a permit waits
    /// for the connection to take some (control replies a peer asks for and
    /// does not read): the budget bounds transfers, this bounds the rest.
    static let queuedBytesBeforeWaiting = 1024 * 1024

    /// Hands `message` over; with a permit, its bytes count against the
    /// budget until written. Waits while too much is unwritten.
    func send(_ message: USBRedirMessage, id: UInt64 = 0, releasing permit: InFlightBudget.Permit? = nil) async {
        queueForVM(message, id: id, releasing: permit)
        while outbox.queuedBytes > Self.queuedBytesBeforeWaiting, !outbox.broken {
            collectWritesArmed()
            guard outbox.queuedBytes > Self.queuedBytesBeforeWaiting, !outbox.broken else { break }
            await waitOutsideBurst { outbox.roomWaiters.append($0) }
        }
    }

    /// Hands `message` over without waiting: its place in line is taken now.
    /// `inBurst`: a reply made in the reader's own turn, handed over with
    /// the rest of its read (anything else goes at once: it must not wait
    /// for the reader, which may be waiting itself).
    func queueForVM(_ message: USBRedirMessage, id: UInt64 = 0, releasing permit: InFlightBudget.Permit? = nil,
                 inBurst: Bool = false) {
        guard writer != nil, let negotiation, !outbox.broken else {
            if let permit { releasePermit(permit) }
            return
        }
        trace.record("to VM", message, id: id, logger: logger)
        var header = ByteBuffer()
        let parts: [ByteBuffer]
        do {
            // Header and payload go out as two slices: the payload (a device
            // buffer, a slice of the stick's read) is never copied here.
            let data = try header.writeUSBRedirPacketHeader(USBRedirPacket(id: id, message), negotiation: negotiation)
            parts = if let data, data.readableBytes > 0 { [header, data] } else { [header] }
        } catch {
            logger.debug("cannot serialise a message", metadata: ["type": "\(message.type)", "error": "\(error)"])
            if let permit { releasePermit(permit) }
            return
        }
        let bytes = parts.reduce(0) { $0 + $1.readableBytes }
        outbox.append(.init(bytes: bytes, permit: permit), OutgoingPacket(parts: parts, compressible: compressible))
        if !inBurst || bursts == 0 || lifts > 0 { flushHeld() }
    }

    /// While the engine handles one read, its replies are handed over
    /// together at the end (one loop task, one syscall for the burst).
    func holdingFlush<T>(_ body: () async throws -> T) async rethrows -> T {
        bursts += 1
        defer {
            bursts -= 1
            flushHeld()
        }
        return try await body()
    }

    /// The same for work done in one turn (a read handled in turn, a batch
    /// of device completions).
    func holdingFlushInTurn<T>(_ body: () throws -> T) rethrows -> T {
        bursts += 1
        defer {
            bursts -= 1
            flushHeld()
        }
        return try body()
    }

    /// Waits with the burst's hold lifted: what it holds goes out now, and
    /// replies finished meanwhile (by lanes, streams) go out at once. A wait
    /// on writes (budget, room, flush) could never end otherwise.
    func outsideBurst<T>(_ wait: () async -> T) async -> T {
        lifts += 1
        flushHeld()
        defer { lifts -= 1 }
        return await wait()
    }

    /// Waits outside the burst for the transport's progress: `register`
    /// records the waiter, then, in the same turn, what the transport
    /// reported meanwhile is taken in (which may wake it at once) and the
    /// next report is armed to. A report that came between the caller's
    /// last look and the registration is never lost: the wait may start
    /// a hop after that look.
    func waitOutsideBurst<T>(_ register: (CheckedContinuation<T, Never>) -> Void) async -> T {
        await outsideBurst {
            await withCheckedContinuation { continuation in
                register(continuation)
                collectWritesArmed()
            }
        }
    }

    /// Hands over what the burst holds back.
    func flushHeld() {
        guard let writer, let (packets, last) = outbox.takeHeld() else { return }
        writer.enqueue(packets) { [progress = outbox.progress] ok in
            progress.record(last, ok: ok)
        }
    }

    /// Takes in what the transport has written: releases those permits and
    /// wakes whoever waited for them. Cheap (one lock); called before every
    /// budget or room check.
    func collectWrites() {
        let wasBroken = outbox.broken
        for p in outbox.collectWritten() { releasePermit(p) }
        if outbox.broken && !wasBroken { logger.debug("a write to the VM failed; dropping what is unwritten") }
        wakeOutboxWaiters()
    }

    /// The last look before waiting on writes: the wake-up (the transport's
    /// next report wakes the engine) is armed first, so a report that lands
    /// between this look and the wait is not lost.
    func collectWritesArmed() {
        armWriteWake()
        collectWrites()
    }

    private func armWriteWake() {
        outbox.progress.arm { [weak self] in
            Task { await self?.writesProgressed() }
        }
    }

    private func writesProgressed() {
        collectWrites()
        let waiting = !outbox.flushWaiters.isEmpty || !outbox.roomWaiters.isEmpty || !budgetWaiters.isEmpty
        guard waiting, !outbox.broken else { return }
        collectWritesArmed()
    }

    private func wakeOutboxWaiters() {
        for w in outbox.takeFlushed() { w.continuation.resume(returning: !outbox.broken) }
        if outbox.queuedBytes <= Self.queuedBytesBeforeWaiting || outbox.broken {
            let room = outbox.roomWaiters
            outbox.roomWaiters = []
            for r in room { r.resume() }
        }
    }

    /// The connection is gone or failed: nothing unwritten counts any more,
    /// every waiter goes on.
    func shutOutbox() {
        for p in outbox.breakDown() { releasePermit(p) }
        wakeOutboxWaiters()
    }

    /// Waits until everything handed over so far is written; false when the
    /// connection failed first.
    func flushed() async -> Bool {
        collectWritesArmed()
        guard outbox.finished < outbox.appended, !outbox.broken else { return !outbox.broken }
        let mark = outbox.appended
        return await waitOutsideBurst { outbox.flushWaiters.append((mark, $0)) }
    }

    /// `send`, bounded: when the write has not completed after the deadline
    /// (a peer that stopped reading), the connection is closed, which ends
    /// the write. Returns whether it completed in time.
    func send(_ message: USBRedirMessage, deadlineNanoseconds: UInt64) async -> Bool {
        guard let writer else { return false }
        let expired = ExpiryFlag()
        let watchdog = Task {
            try await Task.sleep(nanoseconds: deadlineNanoseconds)
            expired.set()
            writer.close()
        }
        queueForVM(message)
        let written = await flushed()
        watchdog.cancel()
        return written && !expired.isSet
    }
}
