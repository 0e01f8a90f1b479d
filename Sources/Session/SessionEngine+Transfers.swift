import Devices
import NIOCore
import USBRedirProtocol

extension SessionEngine {
    /// Queues a data packet on its endpoint's lane. Waits (so reading from
    /// the VM pauses) while the in-flight bounds are reached.
    func submit(id: UInt64, kind: TransferJob.Kind, reserving: Int) async {
        lastSerial += 1
        guard let device else {
            await send(TransferJob(id: id, serial: lastSerial, generation: generation, device: NoDevice.shared, kind: kind)
                .reply(.failed(.noDevice)), id: id)
            return
        }
        var job = TransferJob(id: id, serial: lastSerial, generation: generation, device: device, kind: kind)
        if reserving > limits.maxTransferLength {
            admit(job)
            return complete(job, .failed(.invalid))
        }
        // OUT data is already held; IN requests reserve what they asked for.
        guard let permit = await acquirePermit(bytes: max(reserving, 1)) else { return }
        guard job.generation == generation else { return budget.release(permit) }
        job.permit = permit
        admit(job)
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
            await outsideBurst { await withCheckedContinuation { budget.waiters.append($0) } }
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
        // Handed over, not awaited: the lane goes on to its next job while
        // the transport writes the reply; the budget bounds what is unwritten.
        let reply = EndpointReplyOrder.Reply(message: job.reply(result), packetID: job.id, permit: job.permit)
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
