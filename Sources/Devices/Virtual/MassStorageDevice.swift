import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A mass-storage stick over a raw image file: Bulk-Only Transport with the
/// SCSI transparent command set (design.md). High speed, or SuperSpeed on
/// request (USB 3.0 descriptors, BOS, endpoint companions), so a Linux guest
/// on xhci sends it 1 MiB commands instead of 120 KiB ones. A SuperSpeed
/// stick works on xhci only: QEMU attaches it to an ehci port at high speed
/// but leaves bMaxPacketSize0 at 9, which a high-speed guest refuses.
///
/// Its state is behind one lock (`StickState`). What it has in memory it
/// answers inside `submit`: control requests, CBWs, CSWs, data made by a
/// command, image data already read ahead, UAS Command IUs and the UAS
/// transfers whose command has come and whose data is ready. Image I/O
/// runs on NIO's file-I/O pool and completes its transfer when it lands:
/// reads not read ahead, writes (each fdatasync'ed before the status can
/// say so), flushes; UAS transfers that come before their command wait in
/// the state until it comes.
public final class MassStorageDevice: VirtualUSBDevice {
    public static let vendorID: UInt16 = 0x0525
    public static let productID: UInt16 = 0xa4a5
    public static let bulkIn: UInt8 = 0x81, bulkOut: UInt8 = 0x02
    public static let blockSize = 512
    /// Largest data phase of one command; bounds what a command can make us read.
    public static let maxCommandBytes = 16 * 1024 * 1024

    public let descriptor: USBDeviceDescriptor
    public let speed: USBSpeed
    public let imagePath: String
    public let readOnly: Bool
    let image: ImageFile
    let state: NIOLockedValueBox<StickState>

    /// `offersUAS` (SuperSpeed only): alternate setting 1 is UAS with bulk
    /// streams, which a guest prefers to Bulk-Only when its controller has
    /// streams (xhci); alternate setting 0 stays Bulk-Only for the others.
    public init(imagePath: String, readOnly: Bool, serial: String, superSpeed: Bool = false,
                offersUAS: Bool = false) throws {
        image = try ImageFile(path: imagePath, readOnly: readOnly)
        self.imagePath = imagePath
        self.readOnly = readOnly
        speed = superSpeed ? .super : .high
        var d = USBDeviceDescriptor(vendorID: Self.vendorID, productID: Self.productID)
        d.manufacturer = "usbredir"
        d.product = "Virtual Disk"
        d.serial = serial
        // USB 3.0: ep0 is 2^9 bytes, bulk packets 1024.
        if superSpeed { (d.usbVersion, d.maxPacketSize0) = (0x0300, 9) }
        descriptor = d
        let packet: UInt16 = superSpeed ? 1024 : 512
        let interface = USBInterfaceDescriptor(
            number: 0, interfaceClass: 0x08, interfaceSubclass: 0x06, interfaceProtocol: 0x50,
            endpoints: [.init(address: Self.bulkIn, type: .bulk, maxPacketSize: packet),
                        .init(address: Self.bulkOut, type: .bulk, maxPacketSize: packet)])
        let interfaces = superSpeed && offersUAS ? [interface, Self.uasInterface(packet: packet)] : [interface]
        let core = VirtualDeviceCore(descriptor: d, configuration: .init(value: 1, interfaces: interfaces),
                                     superSpeed: superSpeed)
        state = NIOLockedValueBox(StickState(
            core: core, image: image, readOnly: readOnly,
            scsi: SCSIState(blocks: image.size / UInt64(Self.blockSize), serial: serial)))
    }

    public func withCore<T>(_ body: (inout VirtualDeviceCore) -> T) -> T {
        state.withLockedValue { body(&$0.core) }
    }

    /// Runs `body` under the lock, then, unlocked, what it left to do: its
    /// I/O goes to the file-I/O pool, its completions run (a completion may
    /// submit the next transfer, which takes the lock again).
    @discardableResult
    func locked<T>(_ body: (inout StickState, inout StickEffects) -> T) -> T {
        var effects = StickEffects()
        let value = state.withLockedValue { body(&$0, &effects) }
        carryOut(effects)
        return value
    }

    private func carryOut(_ effects: StickEffects) {
        for job in effects.jobs {
            NIOThreadPool.singleton.submit { work in
                let result = work == .active ? job.work() : IOResult(ok: false)
                self.locked { s, e in s.landed(job, result, &e) }
            }
        }
        for action in effects.after { action() }
    }

    // MARK: Lifecycle

    /// Takes the image lock again after a close (init took it first).
    public func open() async throws {
        try image.lock()
        locked { s, _ in s.isOpen = true }
    }

    /// Ends what waits for a UAS command, lets the image I/O under way
    /// land, makes every write durable, then lets another assignment have
    /// the image.
    public func close() async {
        locked { s, e in
            s.isOpen = false
            s.readAhead = nil
            s.uasReset(&e)
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let idle = locked { s, _ -> Bool in
                if s.ioInFlight == 0 { return true }
                s.idleWaiters.append(c)
                return false
            }
            if idle { c.resume() }
        }
        let image = self.image
        if (try? await NIOThreadPool.singleton.runIfActive { image.sync() }) == nil { _ = image.sync() }
        image.unlock()
    }

    public func reset() async -> USBTransferStatus {
        locked { s, e in
            s.core.reset()
            s.bot = .idle
            s.botEpoch += 1
            s.readAhead = nil
            s.uasReset(&e)
        }
        return .success
    }

    public func setConfiguration(_ value: UInt8) async -> USBTransferStatus {
        locked { s, e in
            s.uasReset(&e)
            return s.core.setConfiguration(value)
        }
    }

    public func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus {
        locked { s, e in
            s.uasReset(&e)
            return s.core.setAltSetting(interface: interface, alt: alt)
        }
    }

    // MARK: Transfers

    public func submit(_ request: USBTransferRequest,
                       completion: @escaping USBTransferCompletion) -> (any USBCancellableTransfer)? {
        let pending = locked { s, e in s.submit(request, completion, &e) }
        return pending.map { StickTransfer(device: self, pending: $0) }
    }

    // MARK: Tests

    func syncImage() -> Bool { image.sync() }
    /// Successful fdatasync calls on the image (tests).
    var imageDataSyncs: Int { image.dataSyncs }
    var imageBlocks: UInt64 { image.size / UInt64(Self.blockSize) }
    func readImage(lba: UInt64, blocks: Int) -> ByteBuffer? {
        image.read(offset: lba * UInt64(Self.blockSize), count: blocks * Self.blockSize)
    }
    /// Whether a read ahead has landed (tests: the next IN is then answered at once).
    var readAheadLanded: Bool { state.withLockedValue { $0.readAhead?.landed != nil } }
    /// Image I/O on the pool not landed yet (tests).
    var imageIOInFlight: Int { state.withLockedValue { $0.ioInFlight } }
}

/// A transfer the stick keeps: one waiting for its UAS command, or a BOT
/// transfer queued behind the image I/O of the one before it. Cancelling
/// it completes it `.cancelled`, once; image I/O under way is not
/// cancelled (its transfer completes when it lands).
struct StickTransfer: USBCancellableTransfer {
    let device: MassStorageDevice
    let pending: StickState.Pending

    func cancel() { device.locked { s, e in s.cancel(pending, &e) } }
}

/// What a locked section leaves to do once unlocked.
struct StickEffects {
    var jobs: [IOJob] = []
    var after: [() -> Void] = []

    mutating func complete(_ completion: @escaping USBTransferCompletion, _ result: USBTransferResult) {
        after.append { completion(result) }
    }
}

/// What an I/O job on the file-I/O pool reports.
struct IOResult: Sendable {
    var ok: Bool
    /// A read's bytes (nil: it failed).
    var data: ByteBuffer? = nil
}

/// Image I/O for the pool: `work` runs there, then `landed` under the lock.
struct IOJob: Sendable {
    let work: @Sendable () -> IOResult
    let landed: @Sendable (inout StickState, IOResult, inout StickEffects) -> Void
}

/// A BOT transfer (bulk IN or OUT) as it came.
struct BOTTransfer: Sendable {
    var id: Int
    var endpoint: UInt8
    var length: Int
    var data: ByteBuffer
    var completion: USBTransferCompletion
}

/// Everything of the stick that changes, behind its lock.
struct StickState: Sendable {
    typealias Stick = MassStorageDevice

    enum Pending: Sendable {
        case bot(id: Int)
        case uas(UASState.WaitKey, id: Int)
    }

    var core: VirtualDeviceCore
    let image: ImageFile
    let readOnly: Bool
    var scsi: SCSIState
    var bot = BulkOnlyState.idle
    /// Bumped when the BOT state is reset under an image write or flush:
    /// what lands then no longer moves the state.
    var botEpoch = 0
    /// A BOT transfer waits for image I/O: the next ones queue behind it,
    /// in order (as the transfers of one endpoint would on a real device).
    var botBusy = false
    var botQueue: [BOTTransfer] = []
    /// The bulk IN waiting for image bytes (read ahead or read now).
    var botRead: BOTRead?
    /// The next image bytes, being read on the file-I/O pool before the
    /// host asks (sequential reads find them ready).
    var readAhead: ReadAhead?
    /// The UAS side's commands (alternate setting 1; see MassStorageDevice+UAS).
    var uas = UASState()
    /// Between close and open no UAS transfer may wait: nothing would end it.
    var isOpen = true
    /// Image I/O on the pool not landed yet; close waits for none.
    var ioInFlight = 0
    var idleWaiters: [CheckedContinuation<Void, Never>] = []
    private var lastID = 0

    init(core: VirtualDeviceCore, image: ImageFile, readOnly: Bool, scsi: SCSIState) {
        self.core = core
        self.image = image
        self.readOnly = readOnly
        self.scsi = scsi
    }

    mutating func nextID() -> Int {
        lastID += 1
        return lastID
    }

    mutating func startIO(_ job: IOJob, _ e: inout StickEffects) {
        ioInFlight += 1
        e.jobs.append(job)
    }

    mutating func landed(_ job: IOJob, _ result: IOResult, _ e: inout StickEffects) {
        ioInFlight -= 1
        job.landed(&self, result, &e)
        if ioInFlight == 0 {
            for c in idleWaiters { e.after.append { c.resume() } }
            idleWaiters = []
        }
    }

    mutating func submit(_ request: USBTransferRequest, _ completion: @escaping USBTransferCompletion,
                         _ e: inout StickEffects) -> Pending? {
        switch request {
        case .control(let setup, _):
            e.complete(completion, control(setup))
        case .isochronous:
            e.complete(completion, .failed(.invalid))
        case .data(let endpoint, let length, let data, let streamID):
            if Stick.isUASPipe(endpoint) {
                if core.halted.contains(endpoint) {
                    e.complete(completion, .failed(.stall))
                    return nil
                }
                return uasTransfer(endpoint: endpoint, length: length, data: data, streamID: streamID, completion, &e)
            }
            guard endpoint == Stick.bulkIn || endpoint == Stick.bulkOut else {
                e.complete(completion, .failed(core.halted.contains(endpoint) ? .stall : .invalid))
                return nil
            }
            let t = BOTTransfer(id: nextID(), endpoint: endpoint, length: length, data: data ?? ByteBuffer(),
                                completion: completion)
            if botBusy || !botQueue.isEmpty {
                botQueue.append(t)
                return .bot(id: t.id)
            }
            botRun(t, &e)
        }
        return nil
    }

    mutating func cancel(_ pending: Pending, _ e: inout StickEffects) {
        switch pending {
        case .bot(let id):
            guard let i = botQueue.firstIndex(where: { $0.id == id }) else { return }
            e.complete(botQueue.remove(at: i).completion, .failed(.cancelled))
        case .uas(let key, let id):
            guard uas.waiters[key]?.id == id, let w = uas.waiters.removeValue(forKey: key) else { return }
            e.complete(w.completion, .failed(.cancelled))
        }
    }

    mutating func control(_ setup: USBSetupPacket) -> USBTransferResult {
        if let standard = core.standardControl(setup) { return standard }
        switch (setup.requestType, setup.request) {
        case (0xa1, 0xfe):      // Get Max LUN: one LUN
            return .inData(ByteBuffer(bytes: [0].prefix(Int(setup.length))))
        case (0x21, 0xff):      // Bulk-Only Mass Storage Reset
            bot = .idle
            botEpoch += 1
            return .outDone(0)
        default:
            return .failed(.stall)
        }
    }

    // MARK: Bulk-Only Transport (USB MSC BOT 1.0)

    /// Runs the queued BOT transfers while no image I/O holds them up.
    mutating func botDrain(_ e: inout StickEffects) {
        while !botBusy && !botQueue.isEmpty { botRun(botQueue.removeFirst(), &e) }
    }

    private mutating func botRun(_ t: BOTTransfer, _ e: inout StickEffects) {
        if core.halted.contains(t.endpoint) { return e.complete(t.completion, .failed(.stall)) }
        if t.endpoint == Stick.bulkOut { bulkOut(t, &e) } else { bulkIn(t, &e) }
    }

    private mutating func bulkOut(_ t: BOTTransfer, _ e: inout StickEffects) {
        let data = t.data
        switch bot {
        case .idle:
            guard let cbw = CommandBlockWrapper(data) else {
                // An invalid CBW: stall both pipes until reset recovery (BOT 6.6.1).
                core.halted.formUnion([Stick.bulkIn, Stick.bulkOut])
                return e.complete(t.completion, .failed(.stall))
            }
            let outcome = execute(cbw.command, hostWantsIn: cbw.isIn)
            guard case .flush(let eject) = outcome else {
                bot = start(cbw, outcome)
                return e.complete(t.completion, .outDone(data.readableBytes))
            }
            // SYNCHRONIZE CACHE, eject: the CBW completes once the image is on disk.
            let epoch = botEpoch
            botBusy = true
            flush(&e) { s, ok, e in
                s.botBusy = false
                if s.botEpoch == epoch { s.bot = s.start(cbw, s.flushed(ok, eject: eject)) }
                e.complete(t.completion, .outDone(data.readableBytes))
                s.botDrain(&e)
            }
        case .dataOut(var phase):
            let n = data.readableBytes
            let accepted = min(n, phase.expected - phase.received)
            let writes = accepted > 0 && phase.sense == .none && phase.writable > phase.received
            let toWrite = writes ? min(accepted, phase.writable - phase.received) : 0
            if writes { readAhead = nil }   // it may hold the bytes about to change
            let offset = phase.offset + UInt64(phase.received)
            phase.received += accepted
            let last = phase.received >= phase.expected
            // Write-through: the caching page says the write cache is off,
            // so the data is on disk before the CSW can report success.
            let sync = last && phase.writable > 0 && phase.sense == .none
            guard toWrite > 0 || sync else {
                bot = last ? .status(phase.csw) : .dataOut(phase)
                if last && phase.sense != .none { scsi.sense = phase.sense }
                return e.complete(t.completion, .outDone(n))
            }
            let slice = data.getSlice(at: data.readerIndex, length: toWrite)!
            let image = self.image, epoch = botEpoch, pending = phase
            botBusy = true
            startIO(IOJob(work: {
                guard toWrite == 0 || image.write(slice, offset: offset) else { return IOResult(ok: false) }
                return IOResult(ok: !sync || image.syncData())
            }, landed: { s, r, e in
                s.botBusy = false
                if s.botEpoch == epoch {
                    var phase = pending
                    if !r.ok { phase.sense = .writeError }
                    if last {
                        if phase.sense != .none { s.scsi.sense = phase.sense }
                        s.bot = .status(phase.csw)
                    } else {
                        s.bot = .dataOut(phase)
                    }
                }
                e.complete(t.completion, .outDone(n))
                s.botDrain(&e)
            }), &e)
        case .dataIn, .status:
            e.complete(t.completion, .failed(.stall))
        }
    }

    private mutating func bulkIn(_ t: BOTTransfer, _ e: inout StickEffects) {
        switch bot {
        case .dataIn(let phase) where phase.image != nil:
            imageIn(phase, t, &e)
        case .dataIn(var phase):
            let n = min(t.length, phase.data.readableBytes)
            let chunk = phase.data.readSlice(length: n)!
            phase.sent += n
            // A short packet, or all the host asked for, ends the data phase.
            bot = (phase.data.readableBytes == 0 || n < t.length) ? .status(phase.csw) : .dataIn(phase)
            e.complete(t.completion, .inData(chunk))
        case .status(let csw):
            // The CSW is 13 bytes in one packet: a shorter IN would overflow
            // (babble, as a real device's 512-byte packet would); the CSW
            // stays for the next read. Never more than the guest asked for.
            guard t.length >= 13 else { return e.complete(t.completion, .failed(.babble)) }
            bot = .idle
            e.complete(t.completion, .inData(csw.bytes))
        case .idle, .dataOut:
            e.complete(t.completion, .failed(.stall))
        }
    }

    /// fsyncs the image on the pool, then `landed` with whether it worked.
    mutating func flush(_ e: inout StickEffects,
                        landed: @escaping @Sendable (inout StickState, Bool, inout StickEffects) -> Void) {
        let image = self.image
        startIO(IOJob(work: { IOResult(ok: image.sync()) }, landed: { s, r, e in landed(&s, r.ok, &e) }), &e)
    }

    /// What a flushing command comes to once the flush is done.
    mutating func flushed(_ ok: Bool, eject: Bool) -> SCSIOutcome {
        guard ok else { return .failed(.writeError) }
        if eject { scsi.ejected = true }
        return .data(ByteBuffer(), .none)
    }

    mutating func start(_ cbw: CommandBlockWrapper, _ outcome: SCSIOutcome) -> BulkOnlyState {
        let expected = Int(cbw.dataLength)
        var csw = CommandStatusWrapper(tag: cbw.tag, residue: cbw.dataLength, status: 0)
        switch outcome {
        case .imageData(let offset, let count) where cbw.isIn || expected == 0:
            return imagePhase(offset: offset, count: count, expected: expected, csw: csw)
        case .data(let data, let sense) where cbw.isIn || expected == 0:
            if data.readableBytes > expected {
                // The command has more than the host asked for (BOT 6.7.2, case 7, Hi < Di):
                // the host gets what it asked for, then a phase error.
                csw.residue = 0
                guard expected > 0 else { return .status(csw.phaseError) }
                return .dataIn(.init(data: data.getSlice(at: data.readerIndex, length: expected)!, sent: 0,
                                     csw: csw.phaseError))
            }
            csw.status = sense == .none ? 0 : 1
            csw.residue = UInt32(expected - data.readableBytes)
            scsi.sense = sense
            return expected == 0 ? .status(csw) : .dataIn(.init(data: data, sent: 0, csw: csw))
        case .write(let offset, let count) where !cbw.isIn && count <= expected:
            csw.residue = UInt32(expected - count)
            if count == 0 { return .status(csw) }
            return .dataOut(.init(expected: expected, received: 0, writable: count, offset: offset,
                                  sense: .none, cswTemplate: csw))
        case .failed(let sense):
            scsi.sense = sense
            csw.status = 1
            if expected == 0 { return .status(csw) }
            if cbw.isIn { return .dataIn(.init(data: ByteBuffer(), sent: 0, csw: csw)) }
            return .dataOut(.init(expected: expected, received: 0, writable: 0, offset: 0,
                                  sense: sense, cswTemplate: csw))
        default:
            // The host's direction or length disagrees with the command (BOT 6.7 cases 8, 10, 13).
            if cbw.isIn && expected > 0 { return .dataIn(.init(data: ByteBuffer(), sent: 0, csw: csw.phaseError)) }
            if !cbw.isIn && expected > 0 {
                return .dataOut(.init(expected: expected, received: 0, writable: 0, offset: 0,
                                      sense: .invalidFieldInCDB, cswTemplate: csw.phaseError))
            }
            return .status(csw.phaseError)
        }
    }
}
