import NIOCore

/// The stick's UAS side (alternate setting 1, SuperSpeed only): the host
/// queues each command's status and data transfers (stream = tag) before
/// its Command IU, so they wait here, their completions kept in the state,
/// until the command they belong to has come and done its part. A Command
/// IU is answered at once; an image read starts when its command arrives
/// (within the prefetch allowance), a write or flush when its data or
/// command does, and what waits for them completes when they land.
extension MassStorageDevice {
    public static let uasCommandPipe: UInt8 = 0x04, uasStatusPipe: UInt8 = 0x83
    public static let uasDataInPipe: UInt8 = 0x85, uasDataOutPipe: UInt8 = 0x06
    /// Streams per pipe: the host's queue depth (Linux keeps two spare).
    static let uasStreams: UInt32 = 32
    /// Image bytes read ahead for queued commands, at most.
    static let uasPrefetchBytes = 8 * 1024 * 1024

    static func uasInterface(packet: UInt16) -> USBInterfaceDescriptor {
        func pipe(_ address: UInt8, _ usage: UAS.Pipe, streams: Bool) -> USBEndpointDescriptor {
            var e = USBEndpointDescriptor(address: address, type: .bulk, maxPacketSize: packet)
            e.maxStreams = streams ? uasStreams : 0
            e.classSpecific = usage.usageDescriptor
            return e
        }
        return USBInterfaceDescriptor(
            number: 0, alternateSetting: 1, interfaceClass: 0x08, interfaceSubclass: 0x06,
            interfaceProtocol: UAS.interfaceProtocol,
            endpoints: [pipe(uasCommandPipe, .command, streams: false), pipe(uasStatusPipe, .status, streams: true),
                        pipe(uasDataInPipe, .dataIn, streams: true), pipe(uasDataOutPipe, .dataOut, streams: true)])
    }

    static func isUASPipe(_ endpoint: UInt8) -> Bool {
        [uasCommandPipe, uasStatusPipe, uasDataInPipe, uasDataOutPipe].contains(endpoint)
    }
}

/// Streams exist only on the UAS pipes; freeing them ends what waits there.
extension MassStorageDevice: USBBulkStreamsCapable {
    public func allocateStreams(endpoints: [UInt8], count: UInt32) async -> USBTransferStatus {
        let streamed: Set<UInt8> = [Self.uasStatusPipe, Self.uasDataInPipe, Self.uasDataOutPipe]
        // No more than the endpoints declare: the count comes from the VM.
        return (2...Self.uasStreams).contains(count) && !endpoints.isEmpty && endpoints.allSatisfy(streamed.contains)
            ? .success : .invalid
    }

    public func freeStreams(endpoints: [UInt8]) async -> USBTransferStatus {
        locked { s, e in s.uasReset(&e) }
        return .success
    }
}

extension StickState {
    mutating func uasTransfer(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32,
                              _ completion: @escaping USBTransferCompletion, _ e: inout StickEffects) -> Pending? {
        guard isOpen else { e.complete(completion, .failed(.noDevice)); return nil }
        guard core.altSettings[0] == 1 else { e.complete(completion, .failed(.stall)); return nil }
        if endpoint == Stick.uasCommandPipe {
            e.complete(completion, uasRequest(data ?? ByteBuffer(), &e))
            return nil
        }
        guard let tag = UInt16(exactly: streamID), tag != 0 else {
            e.complete(completion, .failed(.invalid))
            return nil
        }
        let pipe: UAS.Pipe = switch endpoint {
        case Stick.uasStatusPipe: .status
        case Stick.uasDataInPipe: .dataIn
        default: .dataOut
        }
        let w = UASState.Waiter(id: nextID(), length: length, data: data ?? ByteBuffer(), completion: completion)
        let key = UASState.WaitKey(pipe: pipe, tag: tag)
        return uasRun(key, w, &e) ? .uas(key, id: w.id) : nil
    }

    /// Serves `w` as far as its command allows; true when it waits (kept in
    /// `uas.waiters` under `key`).
    private mutating func uasRun(_ key: UASState.WaitKey, _ w: UASState.Waiter, _ e: inout StickEffects) -> Bool {
        switch key.pipe {
        case .dataIn: uasDataIn(key, w, &e)
        case .dataOut: uasDataOut(key, w, &e)
        default: uasStatus(key, w, &e)
        }
    }

    /// One waiter per pipe and tag: a host that reuses a tag displaces the first.
    private mutating func uasWait(_ key: UASState.WaitKey, _ w: UASState.Waiter, _ e: inout StickEffects) -> Bool {
        if let displaced = uas.waiters.updateValue(w, forKey: key) {
            e.complete(displaced.completion, .failed(.cancelled))
        }
        return true
    }

    /// The command `tag` changed: whoever waits on it looks again.
    mutating func uasWake(_ tag: UInt16, _ e: inout StickEffects) {
        for pipe in [UAS.Pipe.dataIn, .dataOut, .status] {
            let key = UASState.WaitKey(pipe: pipe, tag: tag)
            if let w = uas.waiters.removeValue(forKey: key) { _ = uasRun(key, w, &e) }
        }
    }

    /// Data phase over: the status IU is ready.
    private mutating func uasFinish(_ tag: UInt16, _ sense: SCSI.Sense, _ e: inout StickEffects) {
        uas.set(tag, .status(UAS.sense(tag: tag, sense: sense)))
        uasWake(tag, &e)
    }

    /// A Command IU is taken at once: the SCSI command runs (an image read
    /// or flush starts on the file-I/O pool), its data and status transfers go on.
    private mutating func uasRequest(_ data: ByteBuffer, _ e: inout StickEffects) -> USBTransferResult {
        switch UAS.request(data) {
        case .command(let c):
            let phase = c.lun == 0 ? uasPhase(execute(c.cdb, hostWantsIn: true), tag: c.tag, &e)
                : .status(UAS.sense(tag: c.tag, sense: .logicalUnitNotSupported))
            uas.set(c.tag, phase)
            uasWake(c.tag, &e)
        case .taskManagement(let t):
            let code = perform(t, &e)
            uas.set(t.tag, .status(UAS.response(tag: t.tag, code: code)))
            uasWake(t.tag, &e)
        case nil:
            return .failed(.stall)
        }
        return .outDone(data.readableBytes)
    }

    /// ABORT TASK drops the task it names; the set aborts and resets drop
    /// everything but the status transfer waiting for this IU's own
    /// Response. Both are complete at once (a drop ends what was in
    /// progress). Any other function (CLEAR ACA, the QUERYs) is not
    /// supported: the host must not take it as done.
    private mutating func perform(_ t: UAS.TaskManagement, _ e: inout StickEffects) -> UInt8 {
        switch t.function {
        case UAS.abortTask:
            uas.set(t.taskTag, nil)
            for pipe in [UAS.Pipe.dataIn, .dataOut, .status] {
                if let w = uas.waiters.removeValue(forKey: .init(pipe: pipe, tag: t.taskTag)) {
                    e.complete(w.completion, .failed(.cancelled))
                }
            }
        case UAS.abortTaskSet, UAS.clearTaskSet, UAS.logicalUnitReset, UAS.itNexusReset:
            uasReset(keepingResponseOf: t.tag, &e)
        default:
            return UAS.functionNotSupported
        }
        return UAS.functionComplete
    }

    private mutating func uasPhase(_ outcome: SCSIOutcome, tag: UInt16, _ e: inout StickEffects) -> UASPhase {
        switch outcome {
        case .data(let bytes, let sense):
            return bytes.readableBytes == 0 ? .status(UAS.sense(tag: tag, sense: sense)) : .dataIn(bytes, sense)
        case .imageData(let offset, let count):
            guard count > 0 else { return .status(UAS.sense(tag: tag, sense: .none)) }
            let range = BulkOnlyState.ImageRange(offset: offset, count: count)
            // Read now when the read-ahead allowance has room; else when the data transfer comes.
            guard uas.prefetched + count <= Stick.uasPrefetchBytes else { return .imageIn(range, .notStarted, counted: false) }
            uas.prefetched += count
            return .imageIn(range, uasRead(range, tag: tag, &e), counted: true)
        case .write(let offset, let count):
            return count == 0 ? .status(UAS.sense(tag: tag, sense: .none)) : .dataOut(offset: offset, count: count, received: 0)
        case .flush(let eject):
            let id = nextID()
            flush(&e) { s, ok, e in
                guard case .flushing(id) = s.uas.tasks[tag] else { return }   // aborted meanwhile
                let sense: SCSI.Sense = if case .failed(let f) = s.flushed(ok, eject: eject) { f } else { .none }
                s.uasFinish(tag, sense, &e)
            }
            return .flushing(id)
        case .failed(let sense):
            scsi.sense = .none   // it goes in the Sense IU, not to a REQUEST SENSE
            return .status(UAS.sense(tag: tag, sense: sense))
        }
    }

    /// Starts reading `range` for the command `tag`; the bytes land in its phase.
    private mutating func uasRead(_ range: BulkOnlyState.ImageRange, tag: UInt16, _ e: inout StickEffects) -> UASPhase.Read {
        let id = nextID()
        read(range, &e) { s, data, e in
            // A reset or abort may have ended the command meanwhile.
            guard case .imageIn(let range, .running(id), let counted) = s.uas.tasks[tag] else { return }
            s.uas.tasks[tag] = .imageIn(range, .landed(data), counted: counted)
            s.uasWake(tag, &e)
        }
        return .running(id)
    }

    /// What a data-in transfer of `length` gets of `bytes`: all of them, or their first `length`.
    private static func inData(_ bytes: ByteBuffer, upTo length: Int) -> USBTransferResult {
        .inData(bytes.getSlice(at: bytes.readerIndex, length: min(length, bytes.readableBytes))!)
    }

    private mutating func uasDataIn(_ key: UASState.WaitKey, _ w: UASState.Waiter, _ e: inout StickEffects) -> Bool {
        let tag = key.tag
        switch uas.tasks[tag] {
        case nil:
            return uasWait(key, w, &e)
        case .dataIn(let bytes, let sense):
            e.complete(w.completion, Self.inData(bytes, upTo: w.length))
            uasFinish(tag, sense, &e)
        case .imageIn(let range, let read, let counted):
            switch read {
            case .landed(let bytes?):
                e.complete(w.completion, Self.inData(bytes, upTo: w.length))
                uasFinish(tag, .none, &e)
            case .landed(nil):
                e.complete(w.completion, .inData(ByteBuffer()))
                uasFinish(tag, .readError, &e)
            case .running:
                return uasWait(key, w, &e)
            case .notStarted:
                uas.tasks[tag] = .imageIn(range, uasRead(range, tag: tag, &e), counted: counted)
                return uasWait(key, w, &e)
            }
        case .dataOut, .writing, .flushing, .status:
            // No data-in phase (or a failed one): the host gets nothing.
            e.complete(w.completion, .inData(ByteBuffer()))
        }
        return false
    }

    private mutating func uasDataOut(_ key: UASState.WaitKey, _ w: UASState.Waiter, _ e: inout StickEffects) -> Bool {
        let tag = key.tag
        switch uas.tasks[tag] {
        case nil, .writing:
            return uasWait(key, w, &e)
        case .dataOut(let offset, let count, let received):
            let n = min(w.data.readableBytes, count - received)
            readAhead = nil   // it may hold the bytes about to change
            let slice = w.data.getSlice(at: w.data.readerIndex, length: n)!
            let last = received + n >= count
            let image = self.image, id = nextID()
            uas.tasks[tag] = .writing(id)
            startIO(IOJob(work: {
                // Write-through, as on the BOT side: on disk before the status says so.
                IOResult(ok: image.write(slice, offset: offset + UInt64(received)) && (!last || image.syncData()))
            }, landed: { s, r, e in
                e.complete(w.completion, .outDone(n))
                // A reset or abort may have ended the command meanwhile.
                guard case .writing(id) = s.uas.tasks[tag] else { return }
                if !r.ok {
                    s.uasFinish(tag, .writeError, &e)
                } else if !last {
                    s.uas.tasks[tag] = .dataOut(offset: offset, count: count, received: received + n)
                    s.uasWake(tag, &e)
                } else {
                    s.uasFinish(tag, .none, &e)
                }
            }), &e)
        case .dataIn, .imageIn, .flushing, .status:
            e.complete(w.completion, .outDone(0))
        }
        return false
    }

    private mutating func uasStatus(_ key: UASState.WaitKey, _ w: UASState.Waiter, _ e: inout StickEffects) -> Bool {
        guard case .status(let iu) = uas.tasks[key.tag] else { return uasWait(key, w, &e) }
        uas.set(key.tag, nil)
        e.complete(w.completion, w.length >= iu.readableBytes ? .inData(iu) : .failed(.babble))
        return false
    }

    /// Alternate setting change, device reset, close: every waiting transfer
    /// ends cancelled and no command survives; a reset by task management
    /// keeps the status transfer that waits for its own Response IU.
    mutating func uasReset(keepingResponseOf tag: UInt16? = nil, _ e: inout StickEffects) {
        let kept = tag.map { UASState.WaitKey(pipe: .status, tag: $0) }
        let survivor = kept.flatMap { uas.waiters.removeValue(forKey: $0) }
        for (_, w) in uas.waiters { e.complete(w.completion, .failed(.cancelled)) }
        uas = UASState()
        if let kept, let survivor { uas.waiters[kept] = survivor }
    }
}

/// Where one UAS command is, from its Command IU to its Sense (or Response) IU.
enum UASPhase: Sendable {
    enum Read: Sendable {
        case notStarted
        /// On the pool, as job `id`.
        case running(Int)
        /// The bytes (nil: the read failed).
        case landed(ByteBuffer?)
    }

    /// Data for the host from memory, then the status with this sense.
    case dataIn(ByteBuffer, SCSI.Sense)
    /// Image bytes for the host; `counted`: they count against the prefetch allowance.
    case imageIn(BulkOnlyState.ImageRange, Read, counted: Bool)
    case dataOut(offset: UInt64, count: Int, received: Int)
    /// A data-out transfer's bytes going to the image (job `id`).
    case writing(Int)
    /// SYNCHRONIZE CACHE or an eject syncing the image (job `id`).
    case flushing(Int)
    /// The IU for the status pipe.
    case status(ByteBuffer)
}

/// The UAS side's commands by tag, and the transfers waiting on them.
struct UASState: Sendable {
    struct WaitKey: Hashable, Sendable {
        var pipe: UAS.Pipe
        var tag: UInt16
    }

    /// A status or data transfer that waits for its command (or its command's I/O).
    struct Waiter: Sendable {
        var id: Int
        var length: Int
        var data: ByteBuffer
        var completion: USBTransferCompletion
    }

    var tasks: [UInt16: UASPhase] = [:]
    var waiters: [WaitKey: Waiter] = [:]
    /// Image bytes of queued commands read (or being read) and not yet sent.
    var prefetched = 0

    /// Sets (or ends, nil) the command `tag`; what it held of the prefetch allowance is given back.
    mutating func set(_ tag: UInt16, _ phase: UASPhase?) {
        if case .imageIn(let range, _, counted: true) = tasks[tag] { prefetched -= range.count }
        tasks[tag] = phase
    }
}
