import Devices
import NIOCore
import USBRedirProtocol

/// Data packets: each endpoint has a lane, served in order by one worker
/// task that lives as long as the lane; lanes run concurrently. The worker
/// runs on the engine and calls the device directly, so one transfer costs
/// one hop to the device and one back: no task per transfer, no stream hop,
/// no separate gate actor. A cancel_data_packet for the running transfer
/// cancels the worker's task (the device sees task cancellation, as
/// `USBDevice` asks); a fresh worker then replies and takes over the lane.
extension SessionEngine {
    struct Lane {
        var pending: [TransferJob] = []
        var worker: Task<Void, Never>?
        /// The worker waits here while `pending` is empty.
        var parked: CheckedContinuation<Void, Never>?
        var running: UInt64?
    }

    /// Queues a data packet on its endpoint. Waits (so reading from the VM
    /// pauses) while the in-flight bounds are reached.
    func submit(id: UInt64, kind: TransferJob.Kind, reserving: Int) async {
        guard let device else {
            await send(TransferJob(id: id, generation: generation, device: NoDevice.shared, kind: kind, reservedBytes: 0)
                .reply(.failed(.noDevice)), id: id)
            return
        }
        var job = TransferJob(id: id, generation: generation, device: device, kind: kind, reservedBytes: reserving)
        if reserving > limits.maxTransferLength {
            await send(job.reply(.failed(.invalid)), id: id)
            return
        }
        // OUT data is already held; IN requests reserve what they asked for.
        job.reservedBytes = max(reserving, 1)
        await acquire(bytes: job.reservedBytes)
        guard job.generation == generation else {
            // The device went while we waited: the permit is of the new generation.
            load.transfers -= 1
            load.bytes -= job.reservedBytes
            wakeBoundWaiters()
            return
        }
        inFlight[id] = InFlight(endpoint: job.endpoint)
        enqueue(job)
    }

    // MARK: In-flight bounds

    /// One oversized request still gets through alone, so a single transfer
    /// larger than the byte bound cannot wedge the session.
    private func acquire(bytes amount: Int) async {
        while load.transfers >= limits.maxTransfersInFlight
                || (load.transfers > 0 && load.bytes + amount > limits.maxBytesInFlight) {
            await withCheckedContinuation { boundWaiters.append($0) }
        }
        load.transfers += 1
        load.bytes += amount
    }

    private func release(_ job: TransferJob) {
        // Permits of an earlier generation were forgotten by stopDeviceWork.
        guard job.generation == generation else { return }
        load.transfers -= 1
        load.bytes -= job.reservedBytes
        wakeBoundWaiters()
    }

    func wakeBoundWaiters() {
        guard !boundWaiters.isEmpty else { return }
        let woken = boundWaiters
        boundWaiters = []
        for w in woken { w.resume() }
    }

    // MARK: Lanes

    private func enqueue(_ job: TransferJob) {
        let endpoint = job.endpoint
        var lane = lanes[endpoint] ?? Lane()
        lane.pending.append(job)
        let parked = lane.parked
        lane.parked = nil
        if lane.worker == nil {
            let generation = self.generation
            lane.worker = Task { await self.work(endpoint, generation: generation, carry: nil) }
        }
        lanes[endpoint] = lane
        parked?.resume()
    }

    /// The lane's worker: takes jobs in order, runs each on the device,
    /// replies. Ends when the generation changes (device gone, connection
    /// ended) or hands over to a fresh worker after a cancel.
    private func work(_ endpoint: UInt8, generation: Int, carry: (TransferJob, USBTransferResult)?) async {
        if let (job, result) = carry { await complete(job, result) }
        while generation == self.generation {
            guard var lane = lanes[endpoint] else { return }
            if lane.pending.isEmpty {
                await withCheckedContinuation { lanes[endpoint]?.parked = $0 }
                continue
            }
            let job = lane.pending.removeFirst()
            let cancelled = inFlight[job.id]?.cancelled ?? true
            lane.running = cancelled ? nil : job.id
            lanes[endpoint] = lane
            let result: USBTransferResult = cancelled ? .failed(.cancelled) : await job.perform()
            if generation == self.generation { lanes[endpoint]?.running = nil }
            if Task.isCancelled {
                // Cancelled to cancel `job` (or by stopDeviceWork): this task
                // stays cancelled, so a fresh one replies and serves the lane.
                guard generation == self.generation else { return }
                lanes[endpoint]?.worker = Task { await self.work(endpoint, generation: generation, carry: (job, result)) }
                return
            }
            await complete(job, result)
        }
    }

    private func complete(_ job: TransferJob, _ result: USBTransferResult) async {
        release(job)
        guard inFlight.removeValue(forKey: job.id) != nil, job.generation == generation else { return }
        if result.status == .noDevice {
            logger.warning("device stopped answering during a transfer")
        }
        count(job, result)
        await send(job.reply(result), id: job.id)
    }

    /// Stops every lane: workers are cancelled and woken, queued jobs dropped.
    func stopLanes() {
        for (_, lane) in lanes {
            lane.worker?.cancel()
            lane.parked?.resume()
        }
        lanes = [:]
        load = (0, 0)
        wakeBoundWaiters()
    }

    private func count(_ job: TransferJob, _ r: USBTransferResult) {
        guard r.status == .success else { return }
        if job.endpointIsIn {
            counters.transfersIn += 1
            counters.bytesIn += r.data?.readableBytes ?? 0
        } else {
            counters.transfersOut += 1
            counters.bytesOut += r.consumed
        }
    }

    /// cancel_data_packet: a queued transfer is answered as cancelled when its
    /// turn comes; a running one has its worker's task cancelled.
    func cancel(_ id: UInt64) {
        guard var entry = inFlight[id] else { return }
        entry.cancelled = true
        inFlight[id] = entry
        if let lane = lanes[entry.endpoint], lane.running == id { lane.worker?.cancel() }
    }
}
