import Devices
import NIOCore

/// Transfers handed to a queueing device (libusb) as they come: bulk and
/// interrupt transfers of one endpoint are all in flight at once, in the
/// order the VM sent them (the device keeps that order), rather than one
/// after the other on the endpoint's lane. Completions come back through
/// the mailbox, one hop per batch.
extension SessionEngine {
    /// Starts `job` on the device now; false when it is not one to queue
    /// (control, or a device that does not queue), for the lane to run.
    func startQueued(_ job: TransferJob) -> Bool {
        guard let device = job.device as? any USBQueueingDevice, let t = job.dataTransfer else { return false }
        startDrainer()
        let mailbox = completions
        let transfer = device.startTransfer(endpoint: t.endpoint, length: t.length, data: t.data,
                                            streamID: t.streamID) { mailbox.post(job, $0) }
        if let transfer { queued[job.serial] = transfer }
        return true
    }

    /// Cancels a queued transfer; false when `serial` is not one.
    func cancelQueued(_ serial: UInt64) -> Bool {
        guard let transfer = queued[serial] else { return false }
        transfer.cancel()
        return true
    }

    /// Cancels every queued transfer; their completions, which carry the old
    /// generation, only give their permits back.
    func stopQueued() {
        for transfer in queued.values { transfer.cancel() }
        queued = [:]
    }

    /// The one long-lived task that brings completions onto the engine.
    /// Weak: the mailbox is closed when the engine goes.
    private func startDrainer() {
        guard drainer == nil else { return }
        drainer = Task.detached { [weak self, mailbox = completions] in
            while let batch = await mailbox.next() {
                guard let self else { return }
                await self.deliver(batch)
            }
        }
    }

    /// Replies to a batch of finished transfers, handed over together.
    private func deliver(_ batch: [CompletionMailbox.Finished]) {
        bursts += 1
        for (job, result) in batch {
            queued[job.serial] = nil
            complete(job, result, inBurst: true)
        }
        bursts -= 1
        flushHeld()
    }
}
