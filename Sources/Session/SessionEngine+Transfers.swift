import Devices
import NIOCore
import USBRedirProtocol

extension SessionEngine {
    /// Queues a data packet on its endpoint's lane. Waits (so reading from
    /// the VM pauses) while the in-flight bounds are reached.
    func submit(id: UInt64, kind: TransferJob.Kind, reserving: Int) async {
        guard let device else {
            await send(TransferJob(id: id, generation: generation, device: NoDevice.shared, kind: kind)
                .reply(.failed(.noDevice)), id: id)
            return
        }
        var job = TransferJob(id: id, generation: generation, device: device, kind: kind)
        if reserving > limits.maxTransferLength {
            await send(job.reply(.failed(.invalid)), id: id)
            return
        }
        // OUT data is already held; IN requests reserve what they asked for.
        let permit = await acquirePermit(bytes: max(reserving, 1))
        guard job.generation == generation else { return budget.release(permit) }
        job.permit = permit
        inFlight[id] = InFlight()
        // On an endpoint with nothing queued (its order is kept), a transfer
        // the device answers from memory is done in the engine's own turn:
        // no worker hop.
        if laneIsIdle(job.endpoint), let result = await job.performAtOnce() {
            complete(job, result, inBurst: true)
            return
        }
        guard job.generation == generation, inFlight[id] != nil else {
            // The device went while it was asked.
            inFlight[id] = nil
            return budget.release(permit)
        }
        if !startQueued(job) { enqueue(job) }
    }

    private func laneIsIdle(_ endpoint: UInt8) -> Bool {
        guard let lane = lanes[endpoint] else { return true }
        return lane.running == nil && lane.waiting.isEmpty
    }

    /// Waits for room in the session's one budget (transfers in flight,
    /// their replies until written, receiving streams' packets).
    func acquirePermit(bytes: Int) async -> InFlightBudget.Permit {
        collectWrites()
        while !budget.admits(bytes) {
            // Replies that are written give their permits back when collected.
            collectWritesArmed()
            if budget.admits(bytes) { break }
            await outsideBurst { await withCheckedContinuation { budget.waiters.append($0) } }
        }
        return budget.take(bytes)
    }

    /// Hands the job to its lane: to the parked worker, to a new worker, or
    /// behind the running job.
    private func enqueue(_ job: TransferJob) {
        let endpoint = job.endpoint
        var lane = lanes[endpoint] ?? EndpointLane()
        if let parked = lane.parked {
            lane.parked = nil
            lane.running = job.id
            lanes[endpoint] = lane
            parked.resume(returning: job)
        } else if lane.worker == nil {
            lane.running = job.id
            lane.worker = startWorker(job)
            lanes[endpoint] = lane
        } else {
            lane.waiting.append(job)
            lanes[endpoint] = lane
        }
    }

    /// The lane's worker: calls the device (off the engine, so the engine
    /// keeps serving other endpoints), then one hop back per transfer.
    /// Detached: it must not start on the engine's executor.
    private func startWorker(_ first: TransferJob) -> Task<Void, Never> {
        Task.detached { [weak self] in
            var next: TransferJob? = first
            while let job = next {
                let result = await job.perform()
                guard let self else { return }
                next = await self.finish(job, result)
            }
        }
    }

    /// Replies to a finished job and returns the lane's next one; parks the
    /// worker while the lane is empty. nil ends the worker.
    private func finish(_ job: TransferJob, _ result: USBTransferResult) async -> TransferJob? {
        complete(job, result)
        guard job.generation == generation, var lane = lanes[job.endpoint] else { return nil }
        lane.running = nil
        if lane.workerCancelled {
            // This task was cancelled with its transfer; a fresh one takes over.
            lane.workerCancelled = false
            lane.worker = nil
            if let next = lane.waiting.popFirst() {
                lane.running = next.id
                lane.worker = startWorker(next)
            }
            lanes[job.endpoint] = lane
            return nil
        }
        lanes[job.endpoint] = lane
        return await nextJob(job.endpoint, generation: job.generation)
    }

    private func nextJob(_ endpoint: UInt8, generation current: Int) async -> TransferJob? {
        // A new device's lanes are not this worker's (the generation moved on
        // while it awaited a reply's write).
        while current == generation, var lane = lanes[endpoint] {
            guard let job = lane.waiting.popFirst() else {
                return await withCheckedContinuation { lanes[endpoint]?.parked = $0 }
            }
            if inFlight[job.id]?.cancelled ?? false {
                lanes[endpoint] = lane
                // Cancelled while it waited: answered without the device.
                complete(job, .failed(.cancelled))
                continue
            }
            lane.running = job.id
            lanes[endpoint] = lane
            return job
        }
        return nil
    }

    /// Replies to a finished transfer. Its permit is released only once the
    /// reply is written (by the outbox): a reply waiting for a peer that does not read holds
    /// its bytes, and they count against the budget until they are gone.
    func complete(_ job: TransferJob, _ result: USBTransferResult, inBurst: Bool = false) {
        guard inFlight.removeValue(forKey: job.id) != nil, job.generation == generation else {
            if let permit = job.permit { budget.release(permit) }
            return
        }
        if result.status == .noDevice {
            logger.warning("device stopped answering during a transfer")
        }
        count(job, result)
        // Handed over, not awaited: the lane goes on to its next job while
        // the transport writes the reply; the budget bounds what is unwritten.
        enqueue(job.reply(result), id: job.id, releasing: job.permit, inBurst: inBurst)
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
    /// cancelled when its turn comes; a running one has its worker's task
    /// cancelled (the device call sees it) and the lane gets a fresh worker;
    /// one a queueing device holds is cancelled there.
    func cancel(_ id: UInt64) {
        guard inFlight[id] != nil else { return }
        inFlight[id]?.cancelled = true
        if cancelQueued(id) { return }
        for (endpoint, lane) in lanes where lane.running == id && !lane.workerCancelled {
            lanes[endpoint]?.workerCancelled = true
            lane.worker?.cancel()
        }
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
