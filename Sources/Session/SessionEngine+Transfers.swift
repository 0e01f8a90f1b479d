import Devices
import NIOCore
import USBRedirProtocol

/// Data packets from the VM: the engine asks the transfer book (TransferBook)
/// what to do with them and carries out its actions; the budget's waiting
/// for room is the engine's.
extension SessionEngine {
    /// Starts a data packet's transfer in this turn when the budget has room
    /// (OUT data is already held; IN requests reserve what they asked for);
    /// false, with nothing done, when it must wait for room or has no device.
    func submitInTurn(id: UInt64, kind: TransferJob.Kind, reserving: Int) -> Bool {
        guard let device else { return false }
        if reserving > limits.maxTransferLength {
            book.refuse(id: id, kind: kind, device: device)
            perform(inBurst: false)
            return true
        }
        collectWrites()
        guard !peerGone, book.admits(max(reserving, 1)) else { return false }
        book.admit(id: id, kind: kind, device: device, permit: book.take(max(reserving, 1)))
        perform()
        return true
    }

    /// Starts a data packet's transfer, waiting (so reading from the VM
    /// pauses) while the in-flight bounds are reached.
    func submit(id: UInt64, kind: TransferJob.Kind, reserving: Int) async {
        if submitInTurn(id: id, kind: kind, reserving: reserving) { return }
        guard let device else {
            // Never admitted: answered at once, out of the book.
            let job = TransferJob(id: id, serial: 0, generation: book.generation, device: NoDevice.shared, kind: kind)
            if let reply = job.reply(.failed(.noDevice)) {
                await send(reply, id: id)
            }
            return
        }
        let generation = book.generation
        guard let permit = await acquirePermit(bytes: max(reserving, 1)) else { return }
        guard generation == book.generation else { return releasePermit(permit) }
        book.admit(id: id, kind: kind, device: device, permit: permit)
        perform()
    }

    /// cancel_data_packet (see `TransferBook.cancel`).
    func cancel(_ id: UInt64) {
        book.cancel(packetID: id)
        perform()
    }

    /// Carries out what the book decided, oldest first, until it has nothing
    /// more: what the device answers at once queues more behind (a nested
    /// call takes them, in the same order). `inBurst`: replies go out with
    /// the rest of the read or batch (`queueForVM`).
    func perform(inBurst: Bool = true) {
        while let action = book.nextAction() {
            switch action {
            case .start(let job, let request):
                startOnDevice(job, request)
            case .cancel(let serial):
                running[serial]?.cancel()
            case .finished(let endpointIsIn, let result):
                if result.status == .noDevice {
                    logger.warning("device stopped answering during a transfer")
                }
                count(endpointIsIn: endpointIsIn, result)
            case .reply(let r):
                // Handed over, not awaited: the lane goes on to its next job while
                // the transport writes the reply; the budget bounds what is unwritten.
                queueForVM(r.message, id: r.packetID, releasing: r.permit, inBurst: inBurst)
            case .release(let permit):
                releasePermit(permit)
            }
        }
    }

    /// Waits for room in the session's one budget (transfers in flight,
    /// their replies until written, receiving streams' packets); nil when
    /// the connection closed meanwhile.
    func acquirePermit(bytes: Int) async -> InFlightBudget.Permit? {
        collectWrites()
        while !book.admits(bytes) {
            if peerGone { return nil }
            // Replies that are written give their permits back when collected.
            collectWritesArmed()
            if book.admits(bytes) { break }
            await waitOutsideBurst { continuation in
                budgetWaiters.append(continuation)
                // Room made since the last look (a release, or the close) wakes it now.
                if peerGone || book.admits(bytes) { wakeBudgetWaiters() }
            }
        }
        return peerGone ? nil : book.take(bytes)
    }

    /// Gives a permit back to the budget; whoever waits for room looks again.
    func releasePermit(_ permit: InFlightBudget.Permit) {
        if book.release(permit) { wakeBudgetWaiters() }
    }

    /// Lets every waiter for room look again (also when the connection
    /// closed or the book was reset: they give up or find room).
    func wakeBudgetWaiters() {
        let woken = budgetWaiters
        budgetWaiters = []
        for w in woken { w.resume() }
    }

    private func count(endpointIsIn: Bool, _ r: USBTransferResult) {
        guard r.status == .success else {
            countError(WireValues.status(r.status))
            return
        }
        if endpointIsIn {
            counters.transfersIn += 1
            counters.bytesIn += r.data?.readableBytes ?? 0
        } else {
            counters.transfersOut += 1
            counters.bytesOut += r.consumed
        }
    }
}

extension SessionEngine {
    /// The counters, with the in-flight gauge filled in as of now.
    var countersNow: SessionCounters {
        var c = counters
        c.transfersInFlight = book.transfersInFlight
        return c
    }

    /// A transfer answered with a failure, by the status the VM was sent.
    func countError(_ status: USBRedirStatus) {
        counters.errors[WireValues.name(status), default: 0] += 1
    }
}
