import NIOCore

/// A mass-storage stick over a raw image file: Bulk-Only Transport with the
/// SCSI transparent command set (design.md). High speed, or SuperSpeed on
/// request (USB 3.0 descriptors, BOS, endpoint companions), so a Linux guest
/// on xhci sends it 1 MiB commands instead of 120 KiB ones. A SuperSpeed
/// stick works on xhci only: QEMU attaches it to an ehci port at high speed
/// but leaves bMaxPacketSize0 at 9, which a high-speed guest refuses.
public actor MassStorageDevice: USBAsyncTransferDevice {
    public static let vendorID: UInt16 = 0x0525
    public static let productID: UInt16 = 0xa4a5
    public static let bulkIn: UInt8 = 0x81, bulkOut: UInt8 = 0x02
    public static let blockSize = 512
    /// Largest data phase of one command; bounds what a command can make us read.
    public static let maxCommandBytes = 16 * 1024 * 1024

    public nonisolated let descriptor: USBDeviceDescriptor
    public nonisolated let speed: USBSpeed
    public nonisolated let imagePath: String
    public nonisolated let readOnly: Bool
    public var core: VirtualDeviceCore
    let image: ImageFile
    var bot = BulkOnlyState.idle
    /// The next image bytes, being read on the file-I/O pool before the
    /// host asks (sequential reads find them ready).
    var readAhead: ReadAhead?
    var scsi: SCSIState
    /// The UAS side's commands (alternate setting 1; see MassStorageDevice+UAS).
    var uas = UASState()
    /// Between close and open no UAS transfer may wait: nothing would end it.
    var isOpen = true

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
        core = VirtualDeviceCore(descriptor: d, configuration: .init(value: 1, interfaces: interfaces),
                                 superSpeed: superSpeed)
        scsi = SCSIState(blocks: image.size / UInt64(Self.blockSize), serial: serial)
    }

    /// Takes the image lock again after a close (init took it first).
    public func open() async throws {
        try image.lock()
        isOpen = true
    }
    /// Makes every write durable before the device goes away, then lets
    /// another assignment have the image.
    public func close() async {
        isOpen = false
        readAhead = nil
        uasReset()
        _ = image.sync()
        image.unlock()
    }
    public func reset() async -> USBTransferStatus {
        core.reset()
        bot = .idle
        readAhead = nil
        uasReset()
        return .success
    }
    public func setConfiguration(_ value: UInt8) async -> USBTransferStatus {
        uasReset()
        return core.setConfiguration(value)
    }
    public func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus {
        uasReset()
        return core.setAltSetting(interface: interface, alt: alt)
    }

    public var activeConfiguration: USBConfigurationDescriptor? { core.activeConfiguration }
    public func altSetting(interface: UInt8) async -> UInt8? { core.altSettings[interface] ?? 0 }
    public func clearHalt(endpoint: UInt8) async -> USBTransferStatus {
        core.halted.remove(endpoint)
        return .success
    }

    public func run(_ request: USBTransferRequest) async -> USBTransferResult {
        switch request {
        case .control(let setup, let data): await control(setup, data: data)
        case .data(let endpoint, let length, let data, let streamID):
            await transfer(endpoint: endpoint, length: length, data: data, streamID: streamID)
        case .isochronous: .failed(.invalid)
        }
    }

    /// A CBW whose command may flush the image to disk (not at once).
    static func mayFlushImage(_ data: ByteBuffer?) -> Bool {
        guard let data, let cbw = CommandBlockWrapper(data), let opcode = cbw.command.first else { return false }
        return flushingOpcodes.contains(opcode)
    }

    /// The same for a UAS Command IU.
    static func mayFlushImage(uasCommand data: ByteBuffer?) -> Bool {
        guard let data, case .command(let c) = UAS.request(data), let opcode = c.cdb.first else { return false }
        return flushingOpcodes.contains(opcode)
    }

    /// SYNCHRONIZE CACHE (10), (16), START STOP UNIT (eject).
    static let flushingOpcodes: Set<UInt8> = [0x35, 0x91, 0x1b]

    public func control(_ setup: USBSetupPacket, data: ByteBuffer?) async -> USBTransferResult {
        if let standard = core.standardControl(setup) { return standard }
        switch (setup.requestType, setup.request) {
        case (0xa1, 0xfe):      // Get Max LUN: one LUN
            return .inData(ByteBuffer(bytes: [0].prefix(Int(setup.length))))
        case (0x21, 0xff):      // Bulk-Only Mass Storage Reset
            bot = .idle
            return .outDone(0)
        default:
            return .failed(.stall)
        }
    }

    public func transfer(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32) async -> USBTransferResult {
        if core.halted.contains(endpoint) { return .failed(.stall) }
        if Self.isUASPipe(endpoint) {
            return await uasTransfer(endpoint: endpoint, length: length, data: data, streamID: streamID)
        }
        switch endpoint {
        case Self.bulkOut: return bulkOut(data ?? ByteBuffer())
        case Self.bulkIn: return await bulkIn(length: length)
        default: return .failed(.invalid)
        }
    }

    // MARK: Bulk-Only Transport (USB MSC BOT 1.0)

    private func bulkOut(_ data: ByteBuffer) -> USBTransferResult {
        switch bot {
        case .idle:
            guard let cbw = CommandBlockWrapper(data) else {
                // An invalid CBW: stall both pipes until reset recovery (BOT 6.6.1).
                core.halted.formUnion([Self.bulkIn, Self.bulkOut])
                return .failed(.stall)
            }
            bot = start(cbw)
            return .outDone(data.readableBytes)
        case .dataOut(var phase):
            let n = data.readableBytes
            let accepted = min(n, phase.expected - phase.received)
            if accepted > 0 && phase.sense == .none && phase.writable > phase.received {
                readAhead = nil   // it may hold the bytes about to change
                let toWrite = min(accepted, phase.writable - phase.received)
                if !image.write(data.getSlice(at: data.readerIndex, length: toWrite)!,
                                offset: phase.offset + UInt64(phase.received)) {
                    phase.sense = .writeError
                }
            }
            phase.received += accepted
            if phase.received >= phase.expected {
                // Write-through: the caching page says the write cache is off,
                // so the data is on disk before the CSW can report success.
                if phase.writable > 0 && phase.sense == .none && !image.syncData() { phase.sense = .writeError }
                if phase.sense != .none { scsi.sense = phase.sense }
                bot = .status(phase.csw)
            } else {
                bot = .dataOut(phase)
            }
            return .outDone(n)
        case .dataIn, .status:
            return .failed(.stall)
        }
    }

    private func bulkIn(length: Int) async -> USBTransferResult {
        switch bot {
        case .dataIn(let phase) where phase.image != nil:
            return await imageIn(phase, length: length)
        case .dataIn(var phase):
            let n = min(length, phase.data.readableBytes)
            let chunk = phase.data.readSlice(length: n)!
            phase.sent += n
            // A short packet, or all the host asked for, ends the data phase.
            bot = (phase.data.readableBytes == 0 || n < length) ? .status(phase.csw) : .dataIn(phase)
            return .inData(chunk)
        case .status(let csw):
            // The CSW is 13 bytes in one packet: a shorter IN would overflow
            // (babble, as a real device's 512-byte packet would); the CSW
            // stays for the next read. Never more than the guest asked for.
            guard length >= 13 else { return .failed(.babble) }
            bot = .idle
            return .inData(csw.bytes)
        case .idle, .dataOut:
            return .failed(.stall)
        }
    }

    private func start(_ cbw: CommandBlockWrapper) -> BulkOnlyState {
        let expected = Int(cbw.dataLength)
        let outcome = execute(cbw.command, hostWantsIn: cbw.isIn)
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

    func syncImage() -> Bool { image.sync() }
    /// Successful fdatasync calls on the image (tests).
    var imageDataSyncs: Int { image.dataSyncs }
    var imageBlocks: UInt64 { image.size / UInt64(Self.blockSize) }
    func readImage(lba: UInt64, blocks: Int) -> ByteBuffer? {
        image.read(offset: lba * UInt64(Self.blockSize), count: blocks * Self.blockSize)
    }
}
