import NIOCore
import Transport
import USBRedirProtocol

/// Sending to the VM through the connection's outbox: the engine queues in
/// the order it decides (synchronously, on the actor), one writer task per
/// connection writes batches and comes back once per batch to release the
/// permits of what it wrote and take the next batch.
extension SessionEngine {
    /// Queued bytes beyond which a sender without a permit waits for the
    /// connection to take some (control replies a peer asks for and does
    /// not read): the budget bounds transfers, this bounds the rest.
    static let queuedBytesBeforeWaiting = 1024 * 1024

    /// Queues `message`; with a permit, its bytes count against the budget
    /// until written. Waits while the queue is over its bound.
    func send(_ message: USBRedirMessage, id: UInt64 = 0, releasing permit: InFlightBudget.Permit? = nil) async {
        enqueue(message, id: id, releasing: permit)
        while outbox.queuedBytes > Self.queuedBytesBeforeWaiting, !outbox.broken {
            await withCheckedContinuation { outbox.roomWaiters.append($0) }
        }
    }

    /// Queues `message` without waiting: its place in line is taken now.
    func enqueue(_ message: USBRedirMessage, id: UInt64 = 0, releasing permit: InFlightBudget.Permit? = nil) {
        guard writer != nil, let negotiation, !outbox.broken else {
            if let permit { budget.release(permit) }
            return
        }
        var header = ByteBuffer()
        do {
            // Header and payload go out as two slices: the payload (a device
            // buffer, a slice of the stick's read) is never copied here.
            let data = try header.writeUSBRedirPacketHeader(USBRedirPacket(id: id, message), negotiation: negotiation)
            var parts = [header]
            if let data, data.readableBytes > 0 { parts.append(data) }
            let bytes = parts.reduce(0) { $0 + $1.readableBytes }
            outbox.append(.init(parts: parts, bytes: bytes, compressible: compressible, permit: permit))
        } catch {
            logger.debug("cannot serialise a message", metadata: ["type": "\(message.type)", "error": "\(error)"])
            if let permit { budget.release(permit) }
            return
        }
        wakeWriter()
    }

    /// Hands the next batch to the parked writer task, or starts one.
    private func wakeWriter() {
        if let parked = outbox.parked {
            outbox.parked = nil
            parked.resume(returning: outbox.takeBatch())
        } else if outbox.writerTask == nil, let writer, let first = outbox.takeBatch() {
            outbox.writerTask = startWriter(writer, first, connection: outbox.connection)
        }
    }

    /// Detached: the write runs off the engine, so the engine keeps serving.
    private func startWriter(_ writer: any USBRedirByteWriter, _ first: Outbox.Batch,
                             connection: Int) -> Task<Void, Never> {
        Task.detached { [weak self] in
            var next: Outbox.Batch? = first
            while let batch = next {
                var ok = true
                do {
                    try await writer.write(parts: batch.parts, compressible: batch.compressible)
                } catch {
                    ok = false
                }
                guard let self else { return }
                next = await self.wrote(batch, ok: ok, connection: connection)
            }
        }
    }

    /// A batch is written (or failed): releases its permits, wakes waiters,
    /// and returns the next batch; parks while there is none. nil ends the task.
    private func wrote(_ batch: Outbox.Batch, ok: Bool, connection: Int) async -> Outbox.Batch? {
        guard connection == outbox.connection else { return nil }
        for p in batch.permits { budget.release(p) }
        outbox.wrote(batch)
        if !ok {
            logger.debug("a write to the VM failed; dropping what is queued")
            shutOutbox()
            return nil
        }
        wakeOutboxWaiters()
        if let batch = outbox.takeBatch() { return batch }
        return await withCheckedContinuation { outbox.parked = $0 }
    }

    private func wakeOutboxWaiters() {
        for w in outbox.takeFlushed() { w.continuation.resume(returning: !outbox.broken) }
        if outbox.queuedBytes <= Self.queuedBytesBeforeWaiting || outbox.broken {
            let room = outbox.roomWaiters
            outbox.roomWaiters = []
            for r in room { r.resume() }
        }
    }

    /// The connection is gone or failed: nothing queued goes out, every waiter goes on.
    func shutOutbox() {
        for p in outbox.breakDown() { budget.release(p) }
        outbox.parked?.resume(returning: nil)
        outbox.parked = nil
        outbox.writerTask = nil
        wakeOutboxWaiters()
    }

    /// Waits until everything queued so far is written; false when the
    /// connection failed first.
    func flushed() async -> Bool {
        guard outbox.finished < outbox.appended, !outbox.broken else { return !outbox.broken }
        let mark = outbox.appended
        return await withCheckedContinuation { outbox.flushWaiters.append((mark, $0)) }
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
        enqueue(message)
        let written = await flushed()
        watchdog.cancel()
        return written && !expired.isSet
    }
}
