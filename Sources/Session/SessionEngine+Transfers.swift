import Devices
import NIOCore
import USBRedirProtocol

extension SessionEngine {
    /// Starts a data packet's transfer in this turn when the budget has room
    /// (OUT data is already held; IN requests reserve what they asked for);
    /// false, with nothing done, when it must wait for room or has no device.
    func submitInTurn(id: UInt64, kind: TransferJob.Kind, reserving: Int) -> Bool {
        guard let device else { return false }
        if reserving > limits.maxTransferLength {
            start(newJob(id: id, kind: kind, device: device), permit: nil)
            return true
        }
        collectWrites()
        guard !peerGone, budget.admits(max(reserving, 1)) else { return false }
        start(newJob(id: id, kind: kind, device: device), permit: budget.take(max(reserving, 1)))
        return true
    }

    /// Starts a data packet's transfer, waiting (so reading from the VM
    /// pauses) while the in-flight bounds are reached.
    func submit(id: UInt64, kind: TransferJob.Kind, reserving: Int) async {
        if submitInTurn(id: id, kind: kind, reserving: reserving) { return }
        guard let device else {
            if let reply = newJob(id: id, kind: kind, device: NoDevice.shared).reply(.failed(.noDevice)) {
                await send(reply, id: id)
            }
            return
        }
        let generation = self.generation
        guard let permit = await acquirePermit(bytes: max(reserving, 1)) else { return }
        guard generation == self.generation else { return budget.release(permit) }
        start(newJob(id: id, kind: kind, device: device), permit: permit)
    }

    private func newJob(id: UInt64, kind: TransferJob.Kind, device: any USBDevice) -> TransferJob {
        lastSerial += 1
        return TransferJob(id: id, serial: lastSerial, generation: generation, device: device, kind: kind)
    }

    /// Puts the job in flight: on the device, or behind its lane's running
    /// one. Without a permit it is too long: answered invalid at once.
    private func start(_ job: TransferJob, permit: InFlightBudget.Permit?) {
        var job = job
        job.permit = permit
        admit(job)
        guard permit != nil else { return complete(job, .failed(.invalid)) }
        if job.queuesOnDevice || laneIsIdle(job.endpoint) {
            if !job.queuesOnDevice { lanes[job.endpoint, default: EndpointLane()].running = job.serial }
            startOnDevice(job)
        } else {
            lanes[job.endpoint, default: EndpointLane()].waiting.append(job)
        }
    }

    /// The job is in flight from now on, and its reply has its place in its
    /// endpoint's order.
    private func admit(_ job: TransferJob) {
        inFlight[job.serial] = InFlight(packetID: job.id)
        if job.repliesInEndpointOrder {
            replyOrder[job.endpoint, default: EndpointReplyOrder()].register(job.serial)
        }
    }

    private func laneIsIdle(_ endpoint: UInt8) -> Bool {
        lanes[endpoint]?.isIdle ?? true
    }

    /// Waits for room in the session's one budget (transfers in flight,
    /// their replies until written, receiving streams' packets); nil when
    /// the connection closed meanwhile.
    func acquirePermit(bytes: Int) async -> InFlightBudget.Permit? {
        collectWrites()
        while !budget.admits(bytes) {
            if peerGone { return nil }
            // Replies that are written give their permits back when collected.
            collectWritesArmed()
            if budget.admits(bytes) { break }
            await waitOutsideBurst { continuation in
                budget.waiters.append(continuation)
                // Room made since the last look (a release, or the close) wakes it now.
                if peerGone || budget.admits(bytes) { budget.wakeWaiters() }
            }
        }
        return peerGone ? nil : budget.take(bytes)
    }

    /// The lane's next job to run. Those cancelled while they waited are
    /// answered on the way, without the device.
    func nextRunnable(_ lane: inout EndpointLane) -> TransferJob? {
        while let job = lane.waiting.popFirst() {
            guard inFlight[job.serial]?.cancelled ?? false else { return job }
            complete(job, .failed(.cancelled))
        }
        return nil
    }

    /// Replies to a finished transfer. Its permit is released only once the
    /// reply is written (by the outbox): a reply waiting for a peer that does not read holds
    /// its bytes, and they count against the budget until they are gone.
    func complete(_ job: TransferJob, _ result: USBTransferResult, inBurst: Bool = false) {
        guard inFlight.removeValue(forKey: job.serial) != nil, job.generation == generation else {
            if let permit = job.permit { budget.release(permit) }
            return
        }
        if result.status == .noDevice {
            logger.warning("device stopped answering during a transfer")
        }
        count(job, result)
        guard let message = job.reply(result) else {
            if let permit = job.permit { budget.release(permit) }
            return
        }
        // Handed over, not awaited: the lane goes on to its next job while
        // the transport writes the reply; the budget bounds what is unwritten.
        let reply = EndpointReplyOrder.Reply(message: message, packetID: job.id, permit: job.permit)
        let send = { (r: EndpointReplyOrder.Reply) in
            self.queueForVM(r.message, id: r.packetID, releasing: r.permit, inBurst: inBurst)
        }
        if job.repliesInEndpointOrder {
            replyOrder[job.endpoint]?.finish(job.serial, reply, send)
        } else {
            send(reply)
        }
    }

    private func count(_ job: TransferJob, _ r: USBTransferResult) {
        guard r.status == .success else {
            countError(WireValues.status(r.status))
            return
        }
        if job.endpointIsIn {
            counters.transfersIn += 1
            counters.bytesIn += r.data?.readableBytes ?? 0
        } else {
            counters.transfersOut += 1
            counters.bytesOut += r.consumed
        }
    }

    /// cancel_data_packet: a transfer waiting on its lane is answered as
    /// cancelled when its turn comes; one on the device is cancelled there.
    /// The VM may have reused the id after an earlier cancel: the oldest
    /// transfer with that id not cancelled yet is the one meant.
    func cancel(_ id: UInt64) {
        guard let serial = inFlight.lazy.filter({ $0.value.packetID == id && !$0.value.cancelled }).map(\.key).min()
        else { return }
        inFlight[serial]?.cancelled = true
        _ = cancelRunning(serial)
    }
}

extension SessionEngine {
    /// The counters, with the in-flight gauge filled in as of now.
    var countersNow: SessionCounters {
        var c = counters
        c.transfersInFlight = inFlight.count
        return c
    }

    /// A transfer answered with a failure, by the status the VM was sent.
    func countError(_ status: USBRedirStatus) {
        counters.errors[WireValues.name(status), default: 0] += 1
    }
}
