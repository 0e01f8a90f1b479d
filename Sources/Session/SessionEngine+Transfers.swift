import Devices
import NIOCore
import USBRedirProtocol

extension SessionEngine {
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
        job.gateEpoch = await gate.acquire(bytes: job.reservedBytes)
        guard job.generation == generation else {
            await gate.release(bytes: job.reservedBytes, epoch: job.gateEpoch)
            return
        }
        inFlight[id] = InFlight()
        queue(for: job.endpoint).enqueue(job)
    }

    private func queue(for endpoint: UInt8) -> EndpointQueue {
        if let q = queues[endpoint] { return q }
        let q = EndpointQueue { [weak self] job in await self?.run(job) }
        queues[endpoint] = q
        return q
    }

    /// Runs one job on its endpoint's task; the device call gets its own task
    /// so cancel_data_packet can cancel it.
    private func run(_ job: TransferJob) async {
        guard var entry = inFlight[job.id], job.generation == generation else {
            await gate.release(bytes: job.reservedBytes, epoch: job.gateEpoch)
            return
        }
        let result: USBTransferResult
        if entry.cancelled {
            result = .failed(.cancelled)
        } else {
            let task = Task.detached { await job.perform() }
            entry.task = task
            inFlight[job.id] = entry
            result = await task.value
        }
        await complete(job, result)
    }

    private func complete(_ job: TransferJob, _ result: USBTransferResult) async {
        await gate.release(bytes: job.reservedBytes, epoch: job.gateEpoch)
        guard inFlight.removeValue(forKey: job.id) != nil, job.generation == generation else { return }
        if result.status == .noDevice {
            logger.warning("device stopped answering during a transfer")
        }
        count(job, result)
        await send(job.reply(result), id: job.id)
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

    /// cancel_data_packet: a queued transfer is answered as cancelled when its
    /// turn comes; a running one has its task cancelled.
    func cancel(_ id: UInt64) {
        guard var entry = inFlight[id] else { return }
        entry.cancelled = true
        entry.task?.cancel()
        inFlight[id] = entry
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
