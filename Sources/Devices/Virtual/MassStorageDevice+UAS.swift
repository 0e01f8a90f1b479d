import NIOCore
import NIOPosix

/// The stick's UAS side (alternate setting 1, SuperSpeed only): the host
/// queues each command's status and data transfers (stream = tag) before
/// its Command IU, so they wait here until the command they belong to has
/// come and done its part. An image read starts when its command arrives.
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

    func uasTransfer(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32) async -> USBTransferResult {
        guard isOpen else { return .failed(.noDevice) }
        guard core.altSettings[0] == 1 else { return .failed(.stall) }
        if endpoint == Self.uasCommandPipe { return uasRequest(data ?? ByteBuffer()) }
        guard let tag = UInt16(exactly: streamID), tag != 0 else { return .failed(.invalid) }
        switch endpoint {
        case Self.uasStatusPipe: return await uasStatus(tag: tag, length: length)
        case Self.uasDataInPipe: return await uasDataIn(tag: tag, length: length)
        default: return await uasDataOut(tag: tag, data: data ?? ByteBuffer())
        }
    }

    /// A Command IU is taken at once: the SCSI command runs (an image read
    /// starts on the file-I/O pool), its data and status transfers go on.
    private func uasRequest(_ data: ByteBuffer) -> USBTransferResult {
        switch UAS.request(data) {
        case .command(let c):
            uas.tasks[c.tag] = c.lun == 0 ? uasPhase(execute(c.cdb, hostWantsIn: true), tag: c.tag)
                : .status(UAS.sense(tag: c.tag, sense: .logicalUnitNotSupported))
            uas.wake(c.tag)
        case .taskManagement(let t):
            uas.tasks[t.tag] = .status(UAS.response(tag: t.tag, code: perform(t)))
            uas.wake(t.tag)
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
    private func perform(_ t: UAS.TaskManagement) -> UInt8 {
        switch t.function {
        case UAS.abortTask:
            uas.drop(t.taskTag)
        case UAS.abortTaskSet, UAS.clearTaskSet, UAS.logicalUnitReset, UAS.itNexusReset:
            uasReset(keepingResponseOf: t.tag)
        default:
            return UAS.functionNotSupported
        }
        return UAS.functionComplete
    }

    private func uasPhase(_ outcome: SCSIOutcome, tag: UInt16) -> UASPhase {
        switch outcome {
        case .data(let bytes, let sense):
            return bytes.readableBytes == 0 ? .status(UAS.sense(tag: tag, sense: sense)) : .dataIn(bytes, sense)
        case .imageData(let offset, let count):
            guard count > 0 else { return .status(UAS.sense(tag: tag, sense: .none)) }
            let range = BulkOnlyState.ImageRange(offset: offset, count: count)
            return .imageIn(range, uasPrefetch(range))
        case .write(let offset, let count):
            return count == 0 ? .status(UAS.sense(tag: tag, sense: .none)) : .dataOut(offset: offset, count: count, received: 0)
        case .failed(let sense):
            scsi.sense = .none   // it goes in the Sense IU, not to a REQUEST SENSE
            return .status(UAS.sense(tag: tag, sense: sense))
        }
    }

    /// Starts reading `range` now when the read-ahead allowance has room.
    private func uasPrefetch(_ range: BulkOnlyState.ImageRange) -> EventLoopFuture<ByteBuffer?>? {
        guard uas.prefetched + range.count <= Self.uasPrefetchBytes else { return nil }
        uas.prefetched += range.count
        let image = self.image
        return NIOThreadPool.singleton.runIfActive(eventLoop: MultiThreadedEventLoopGroup.singleton.any()) {
            image.read(offset: range.offset, count: range.count)
        }
    }

    private func uasDataIn(tag: UInt16, length: Int) async -> USBTransferResult {
        while true {
            switch uas.tasks[tag] {
            case nil:
                guard await uasWait(.dataIn, tag) else { return .failed(.cancelled) }
            case .dataIn(let bytes, let sense):
                uas.finish(tag, sense)
                return .inData(bytes.getSlice(at: bytes.readerIndex, length: min(length, bytes.readableBytes))!)
            case .imageIn(let range, let prefetch):
                uas.tasks[tag] = .reading
                let bytes: ByteBuffer? = if let prefetch { (try? await prefetch.get()) ?? nil }
                    else { await Self.poolRead(image, range) }
                if prefetch != nil { uas.prefetched -= range.count }
                // A reset or abort may have ended the command meanwhile.
                guard case .reading = uas.tasks[tag] else { return .failed(.cancelled) }
                guard let bytes else {
                    uas.finish(tag, .readError)
                    return .inData(ByteBuffer())
                }
                uas.finish(tag, .none)
                return .inData(bytes.getSlice(at: bytes.readerIndex, length: min(length, bytes.readableBytes))!)
            case .reading, .dataOut, .status:
                // No data-in phase (or a failed one): the host gets nothing.
                return .inData(ByteBuffer())
            }
        }
    }

    private func uasDataOut(tag: UInt16, data: ByteBuffer) async -> USBTransferResult {
        while true {
            switch uas.tasks[tag] {
            case nil:
                guard await uasWait(.dataOut, tag) else { return .failed(.cancelled) }
            case .dataOut(let offset, let count, let received):
                let n = min(data.readableBytes, count - received)
                readAhead = nil   // it may hold the bytes about to change
                guard image.write(data.getSlice(at: data.readerIndex, length: n)!, offset: offset + UInt64(received))
                else {
                    uas.finish(tag, .writeError)
                    return .outDone(n)
                }
                if received + n < count {
                    uas.tasks[tag] = .dataOut(offset: offset, count: count, received: received + n)
                } else {
                    // Write-through, as on the BOT side: on disk before the status says so.
                    uas.finish(tag, image.syncData() ? .none : .writeError)
                }
                return .outDone(n)
            default:
                return .outDone(0)
            }
        }
    }

    private func uasStatus(tag: UInt16, length: Int) async -> USBTransferResult {
        while true {
            if case .status(let iu) = uas.tasks[tag] {
                uas.tasks[tag] = nil
                guard length >= iu.readableBytes else { return .failed(.babble) }
                return .inData(iu)
            }
            guard await uasWait(.status, tag) else { return .failed(.cancelled) }
        }
    }

    /// Alternate setting change, device reset, close: every waiting transfer
    /// ends cancelled and no command survives; a reset by task management
    /// keeps the status transfer that waits for its own Response IU.
    func uasReset(keepingResponseOf tag: UInt16? = nil) {
        let kept = tag.map { UASState.WaitKey(pipe: .status, tag: $0) }
        let survivor = uas.cancelAll(except: kept)
        let next = uas.nextWaiter
        uas = UASState()
        uas.nextWaiter = next
        if let kept, let survivor { uas.waiters[kept] = survivor }
    }

    /// Waits until the command `tag` changes (true), or the transfer is
    /// cancelled or displaced (false). One waiter per pipe and tag: a host
    /// that reuses a tag displaces the first.
    private func uasWait(_ pipe: UAS.Pipe, _ tag: UInt16) async -> Bool {
        let key = UASState.WaitKey(pipe: pipe, tag: tag)
        uas.nextWaiter += 1
        let id = uas.nextWaiter
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                guard !Task.isCancelled, isOpen else { return c.resume(returning: false) }
                uas.resume(key, with: false)
                uas.waiters[key] = (id, c)
            }
        } onCancel: {
            Task { await self.uasCancelWait(key, id: id) }
        }
    }

    private func uasCancelWait(_ key: UASState.WaitKey, id: Int) {
        guard uas.waiters[key]?.id == id else { return }
        uas.resume(key, with: false)
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
        uasReset()
        return .success
    }
}

/// Where one UAS command is, from its Command IU to its Sense (or Response) IU.
enum UASPhase: Sendable {
    /// Data for the host from memory, then the status with this sense.
    case dataIn(ByteBuffer, SCSI.Sense)
    /// Image bytes for the host, maybe being read already.
    case imageIn(BulkOnlyState.ImageRange, EventLoopFuture<ByteBuffer?>?)
    case reading
    case dataOut(offset: UInt64, count: Int, received: Int)
    /// The IU for the status pipe.
    case status(ByteBuffer)
}

/// The UAS side's commands by tag, and the transfers waiting on them.
struct UASState: Sendable {
    struct WaitKey: Hashable, Sendable {
        var pipe: UAS.Pipe
        var tag: UInt16
    }

    var tasks: [UInt16: UASPhase] = [:]
    var waiters: [WaitKey: (id: Int, continuation: CheckedContinuation<Bool, Never>)] = [:]
    var nextWaiter = 0
    var prefetched = 0

    /// Data phase over: the status IU is ready; whoever waits looks again.
    mutating func finish(_ tag: UInt16, _ sense: SCSI.Sense) {
        tasks[tag] = .status(UAS.sense(tag: tag, sense: sense))
        wake(tag)
    }

    mutating func wake(_ tag: UInt16) {
        for pipe in [UAS.Pipe.dataIn, .dataOut, .status] { resume(WaitKey(pipe: pipe, tag: tag), with: true) }
    }

    mutating func resume(_ key: WaitKey, with value: Bool) {
        waiters.removeValue(forKey: key)?.continuation.resume(returning: value)
    }

    mutating func drop(_ tag: UInt16) {
        tasks[tag] = nil
        for pipe in [UAS.Pipe.dataIn, .dataOut, .status] { resume(WaitKey(pipe: pipe, tag: tag), with: false) }
    }

    /// Ends every waiter but `kept`'s, which is returned (not resumed).
    @discardableResult
    mutating func cancelAll(except kept: WaitKey? = nil) -> (id: Int, continuation: CheckedContinuation<Bool, Never>)? {
        let survivor = kept.flatMap { waiters.removeValue(forKey: $0) }
        for (_, w) in waiters { w.continuation.resume(returning: false) }
        waiters = [:]
        return survivor
    }
}
