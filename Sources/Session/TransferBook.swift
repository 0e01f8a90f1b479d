import Devices
import NIOCore
import USBRedirProtocol

/// The session's transfers, from the data packet the VM sent to the reply it
/// gets back: plain state, with no device calls, no logger, no actor and no
/// waiting, so it is tested with plain values (TransferBookTests).
///
/// The engine (`SessionEngine`, on the session's loop) feeds it events and
/// carries out the actions it queues, in order, taking them with
/// `nextAction()` until there are none (one buffer, reused: nothing is
/// allocated per transfer for the actions). Carrying out an action may feed
/// it the next event (a device that answers from memory completes inside its
/// `submit`); the new actions queue behind the ones left.
///
/// A transfer's path, in the order of this file:
/// 1. Room. The budget bounds the transfers and bytes in flight (their
///    replies until written, and the receiving streams' packets): `admits`,
///    `take`, `release`. One oversized transfer still gets through alone.
///    Waiting for room is the engine's (`acquirePermit`).
/// 2. `admit`: the transfer gets a serial (packet ids are the VM's and may
///    be reused after a cancel), an entry in the in-flight table and its
///    place in its endpoint's reply order; then it goes to the device
///    (`.start`), or, on a device that takes one transfer per endpoint at a
///    time, behind its lane's running one. `refuse`: one longer than the
///    session allows, answered invalid without the device.
/// 3. `cancel(packetID:)`: the oldest transfer with that id not cancelled
///    yet is marked; if the device holds it, `.cancel` asks the device to end
///    it (its completion then comes as usual). One still waiting on its lane
///    is answered cancelled when its turn comes, without the device.
/// 4. `deviceCompleted`: the transfer leaves the table, is counted
///    (`.finished`) and answered (`.reply`, which holds its permit until the
///    reply is written) in its endpoint's order: a reply that finished before
///    an older one of its endpoint waits for it. Its lane starts its next
///    job. A completion from an earlier generation only gives its permit
///    back (`.release`).
/// 5. `reset` (the connection ended, the device was unplugged): a new
///    generation, nothing in flight, every permit forgotten. The engine
///    cancels what the device still holds; those completions come back stale.
struct TransferBook {
    enum Action {
        /// Submit `request` to the device; its completion comes back as
        /// `deviceCompleted(job, result)`.
        case start(TransferJob, USBTransferRequest)
        /// Cancel the transfer `serial` on the device, if the device holds it.
        case cancel(serial: UInt64)
        /// A transfer ended with `result` (for the counters and the log):
        /// queued before its reply, if it has one.
        case finished(endpointIsIn: Bool, USBTransferResult)
        /// Send `reply` to the VM; its permit goes back once it is written.
        case reply(Reply)
        /// Give `permit` back (`release`): a transfer without a reply ended,
        /// or a stale one was dropped.
        case release(InFlightBudget.Permit)
    }

    /// A reply to the VM: the message, the packet id it answers, and the
    /// permit it holds until written.
    struct Reply {
        var message: USBRedirMessage
        var packetID: UInt64
        var permit: InFlightBudget.Permit?
    }

    /// A transfer the VM asked for and has no reply to yet.
    struct InFlight {
        let packetID: UInt64
        var cancelled = false
    }

    /// Bumped by `reset` and by a new device: completions of jobs from an
    /// earlier generation are stale.
    private(set) var generation = 0
    private var lastSerial: UInt64 = 0
    private var budget: InFlightBudget
    /// By serial (`TransferJob.serial`).
    private var inFlight: [UInt64: InFlight] = [:]
    /// Per endpoint of a device that takes one transfer at a time.
    private var lanes: [UInt8: EndpointLane] = [:]
    /// Per endpoint: its replies leave in the order its packets came.
    private var replyOrder: [UInt8: EndpointReplyOrder] = [:]
    /// Actions not taken by the engine yet, oldest first.
    private var actions = CircularBuffer<Action>()

    init(maxTransfers: Int, maxBytes: Int) {
        budget = InFlightBudget(maxTransfers: maxTransfers, maxBytes: maxBytes)
    }

    /// The next action to carry out, oldest first; nil when there is none.
    mutating func nextAction() -> Action? {
        actions.popFirst()
    }

    /// Transfers admitted and not answered yet.
    var transfersInFlight: Int { inFlight.count }

    // MARK: 1. Room

    /// Whether a transfer (or stream packet) of `bytes` fits in the budget now.
    func admits(_ bytes: Int) -> Bool {
        budget.admits(bytes)
    }

    /// Takes room for `bytes` (after `admits` said yes, or for a lone one).
    mutating func take(_ bytes: Int) -> InFlightBudget.Permit {
        budget.take(bytes)
    }

    /// Gives a permit back; false when it was taken before the last
    /// `reset` (ignored). True means room was made: whoever waits looks again.
    @discardableResult
    mutating func release(_ permit: InFlightBudget.Permit) -> Bool {
        budget.release(permit)
    }

    // MARK: 2. Admit

    /// A transfer with its permit: on the device, or behind its lane's
    /// running job.
    mutating func admit(id: UInt64, kind: TransferJob.Kind, device: any USBDevice, permit: InFlightBudget.Permit) {
        let job = enter(id: id, kind: kind, device: device, permit: permit)
        if job.queuesOnDevice {
            run(job)
        } else if lanes[job.endpoint]?.isIdle ?? true {
            lanes[job.endpoint, default: EndpointLane()].running = job.serial
            run(job)
        } else {
            lanes[job.endpoint]!.waiting.append(job)
        }
    }

    /// A transfer longer than the session allows: answered invalid at once,
    /// in its endpoint's order, without the device and without a permit.
    mutating func refuse(id: UInt64, kind: TransferJob.Kind, device: any USBDevice) {
        let job = enter(id: id, kind: kind, device: device, permit: nil)
        answer(job, .failed(.invalid))
    }

    /// Numbers the transfer; from now on it is in flight, and its reply has
    /// its place in its endpoint's order.
    private mutating func enter(id: UInt64, kind: TransferJob.Kind, device: any USBDevice,
                                permit: InFlightBudget.Permit?) -> TransferJob {
        lastSerial += 1
        var job = TransferJob(id: id, serial: lastSerial, generation: generation, device: device, kind: kind)
        job.permit = permit
        inFlight[job.serial] = InFlight(packetID: id)
        if job.repliesInEndpointOrder {
            replyOrder[job.endpoint, default: EndpointReplyOrder()].register(job.serial)
        }
        return job
    }

    /// Puts `job` on the device; a control packet whose setup is invalid is
    /// answered invalid instead, and never reaches the device.
    private mutating func run(_ job: TransferJob) {
        if let request = job.request {
            actions.append(.start(job, request))
        } else {
            deviceCompleted(job, .failed(.invalid))
        }
    }

    // MARK: 3. Cancel

    /// cancel_data_packet. The VM may have reused the id after an earlier
    /// cancel: the oldest transfer with that id not cancelled yet is the one
    /// meant. A cancel of an id with nothing in flight is ignored.
    mutating func cancel(packetID id: UInt64) {
        guard let serial = inFlight.lazy.filter({ $0.value.packetID == id && !$0.value.cancelled }).map(\.key).min()
        else { return }
        inFlight[serial]!.cancelled = true
        let waiting = lanes.values.contains { lane in lane.waiting.contains { $0.serial == serial } }
        if !waiting { actions.append(.cancel(serial: serial)) }
    }

    // MARK: 4. Completion and reply

    /// The device finished `job` (or it was answered without the device):
    /// answered, and its lane's next job started. Those cancelled while they
    /// waited are answered cancelled on the way, without the device.
    mutating func deviceCompleted(_ job: TransferJob, _ result: USBTransferResult) {
        answer(job, result)
        let endpoint = job.endpoint
        guard !job.queuesOnDevice, job.generation == generation, lanes[endpoint]?.running == job.serial else { return }
        while let next = lanes[endpoint]!.waiting.popFirst() {
            if inFlight[next.serial]?.cancelled ?? false {
                answer(next, .failed(.cancelled))
                continue
            }
            lanes[endpoint]!.running = next.serial
            return run(next)
        }
        lanes[endpoint]!.running = nil
    }

    /// Takes `job` out of flight and replies, in its endpoint's order. Its
    /// permit is released with the reply once written; a transfer without a
    /// reply (iso OUT) gives it back now. A stale job (answered already, or
    /// from an earlier generation) only gives its permit back.
    private mutating func answer(_ job: TransferJob, _ result: USBTransferResult) {
        guard inFlight.removeValue(forKey: job.serial) != nil, job.generation == generation else {
            if let permit = job.permit { actions.append(.release(permit)) }
            return
        }
        actions.append(.finished(endpointIsIn: job.endpointIsIn, result))
        guard let message = job.reply(result) else {
            if let permit = job.permit { actions.append(.release(permit)) }
            return
        }
        let reply = Reply(message: message, packetID: job.id, permit: job.permit)
        if job.repliesInEndpointOrder {
            replyOrder[job.endpoint]?.finish(job.serial, reply, into: &actions)
        } else {
            actions.append(.reply(reply))
        }
    }

    // MARK: 5. Reset

    /// The device's transfers are dropped (the connection ended, or the
    /// device was unplugged): nothing is in flight any more and every permit
    /// is forgotten. Completions still to come are stale.
    mutating func reset() {
        generation += 1
        inFlight = [:]
        replyOrder = [:]
        lanes = [:]
        budget.reset()
    }

    /// A device was plugged: completions of the last one's jobs are stale.
    mutating func newDevice() {
        generation += 1
    }
}

extension TransferBook {
    /// The transfers of one endpoint of a device that takes one at a time:
    /// they run in order, the next one starting when the last completes, so
    /// a pending bulk IN never delays another endpoint or control.
    struct EndpointLane {
        /// Jobs waiting for the one running now.
        var waiting = CircularBuffer<TransferJob>()
        /// The serial of the job on the device now.
        var running: UInt64?

        var isIdle: Bool { running == nil && waiting.isEmpty }
    }

    /// The replies of one endpoint, released in the order its packets came.
    /// A device may finish them in another order (a cancelled URB in the
    /// middle of a kernel queue ends first), but QEMU completes an
    /// endpoint's packets in its own queue's order and aborts when told
    /// otherwise (usb_packet_complete_one), and a cancelled transfer's reply
    /// must reach it before the reply of a new transfer that reuses its id.
    /// Not on bulk streams (`TransferJob.repliesInEndpointOrder`).
    struct EndpointReplyOrder {
        /// Serials of the transfers not answered yet, oldest first.
        private var waiting = CircularBuffer<UInt64>()
        /// Replies that finished before an older transfer of the endpoint.
        private var early: [UInt64: Reply] = [:]

        mutating func register(_ serial: UInt64) {
            waiting.append(serial)
        }

        /// Records `reply` for `serial` and queues every reply now due, in
        /// order (none while an older transfer is still running).
        mutating func finish(_ serial: UInt64, _ reply: Reply, into actions: inout CircularBuffer<Action>) {
            guard waiting.first == serial else {
                early[serial] = reply
                return
            }
            waiting.removeFirst()
            actions.append(.reply(reply))
            while !early.isEmpty, let next = waiting.first, let due = early.removeValue(forKey: next) {
                waiting.removeFirst()
                actions.append(.reply(due))
            }
        }
    }
}

/// Counts transfers and bytes in flight; the reader waits while a bound is
/// reached. One oversized request still gets through alone, so a single
/// transfer larger than the byte bound cannot wedge the session. Pure
/// accounting: whoever waits for room waits in the engine.
struct InFlightBudget {
    /// What one transfer or stream packet holds until its reply is written:
    /// its bytes, and the epoch it was taken in.
    struct Permit: Sendable {
        let bytes: Int
        let epoch: Int
    }

    let maxTransfers: Int
    let maxBytes: Int
    private(set) var transfers = 0
    private(set) var bytes = 0
    /// Bumped by `reset`; releases of permits from before it are ignored.
    private(set) var epoch = 0

    init(maxTransfers: Int, maxBytes: Int) {
        self.maxTransfers = maxTransfers
        self.maxBytes = maxBytes
    }

    func admits(_ amount: Int) -> Bool {
        transfers < maxTransfers && (transfers == 0 || bytes + amount <= maxBytes)
    }

    mutating func take(_ amount: Int) -> Permit {
        transfers += 1
        bytes += amount
        return Permit(bytes: amount, epoch: epoch)
    }

    /// Gives a permit back; one taken before the last `reset` is ignored
    /// (false).
    mutating func release(_ permit: Permit) -> Bool {
        guard permit.epoch == epoch else { return false }
        transfers -= 1
        bytes -= permit.bytes
        return true
    }

    /// Forgets every permit (their transfers were dropped with the device).
    mutating func reset() {
        epoch += 1
        transfers = 0
        bytes = 0
    }
}
