import NIOCore

/// The SCSI target's own state: pending sense data and the medium.
struct SCSIState: Sendable {
    var blocks: UInt64
    var serial: String
    var sense = SCSI.Sense.none
    var ejected = false
    var preventRemoval = false
}

/// What a command asks of the data phase.
enum SCSIOutcome {
    /// Data for the host (possibly empty) and the resulting sense.
    case data(ByteBuffer, SCSI.Sense)
    /// `count` bytes of the image at byte `offset`, read on the IN leg.
    case imageData(offset: UInt64, count: Int)
    /// The host is to send `count` bytes, to be written at byte `offset`.
    case write(offset: UInt64, count: Int)
    case failed(SCSI.Sense)
    /// The image is to be made durable first (on the file-I/O pool), then
    /// the command succeeds (an eject takes the medium out) or fails with
    /// a write error.
    case flush(eject: Bool)
}

extension StickState {
    typealias Device = MassStorageDevice

    mutating func execute(_ cdb: [UInt8], hostWantsIn: Bool) -> SCSIOutcome {
        guard let op = SCSI.Opcode(rawValue: cdb[0]) else { return .failed(.invalidOpcode) }
        // Every command but these needs the medium (SBC-3, 4.x).
        let needsMedium: Set<SCSI.Opcode> = [.requestSense, .inquiry, .startStopUnit, .preventAllowMediumRemoval]
        if scsi.ejected && !needsMedium.contains(op) { return .failed(.mediumNotPresent) }
        switch op {
        case .testUnitReady, .preventAllowMediumRemoval:
            if op == .preventAllowMediumRemoval { scsi.preventRemoval = cdb[4] & 1 != 0 }
            return .data(ByteBuffer(), .none)
        case .requestSense:
            let data = scsi.sense.fixedFormat.prefix(Int(cdb[4]))
            scsi.sense = .none
            return .data(ByteBuffer(bytes: data), .none)
        case .inquiry: return inquiry(cdb)
        case .modeSense6, .modeSense10: return modeSense(cdb, ten: op == .modeSense10)
        case .startStopUnit: return startStop(cdb)
        case .readFormatCapacities:
            let list = [0, 0, 0, 8] + SCSI.bytesBE(min(scsi.blocks, 0xffff_ffff), count: 4) + [2, 0, 2, 0]
            return .data(ByteBuffer(bytes: list.prefix(SCSI.be16(cdb, 7))), .none)
        case .readCapacity10:
            let last = scsi.blocks == 0 ? 0 : min(scsi.blocks - 1, 0xffff_ffff)
            return .data(ByteBuffer(bytes: SCSI.bytesBE(last, count: 4) + SCSI.bytesBE(512, count: 4)), .none)
        case .serviceActionIn16:
            guard cdb[1] & 0x1f == 0x10 else { return .failed(.invalidFieldInCDB) }   // READ CAPACITY(16)
            let body = SCSI.bytesBE(scsi.blocks &- 1, count: 8) + SCSI.bytesBE(512, count: 4)
                + Array(repeating: 0, count: 20)
            return .data(ByteBuffer(bytes: body.prefix(Int(SCSI.be32(cdb, 10)))), .none)
        case .read6, .read10, .read16:
            guard let (lba, count) = Device.range(cdb, op) else { return .failed(.invalidFieldInCDB) }
            return read(lba: lba, count: count)
        case .write6, .write10, .write16:
            guard let (lba, count) = Device.range(cdb, op) else { return .failed(.invalidFieldInCDB) }
            if readOnly { return .failed(.writeProtected) }
            // lba and count come from the guest: compare without adding them.
            guard lba <= scsi.blocks, UInt64(count) <= scsi.blocks - lba else { return .failed(.lbaOutOfRange) }
            guard count * Device.blockSize <= Device.maxCommandBytes else { return .failed(.invalidFieldInCDB) }
            return .write(offset: lba * UInt64(Device.blockSize), count: count * Device.blockSize)
        case .verify10, .verify16:
            let lba = op == .verify10 ? SCSI.be32(cdb, 2) : SCSI.be64(cdb, 2)
            let count = op == .verify10 ? UInt64(SCSI.be16(cdb, 7)) : SCSI.be32(cdb, 10)
            // Both fields are the guest's: lba + count may not fit in 64 bits.
            guard lba <= scsi.blocks, count <= scsi.blocks - lba else { return .failed(.lbaOutOfRange) }
            return .data(ByteBuffer(), .none)
        case .synchronizeCache10, .synchronizeCache16:
            // Writes must be durable before the guest hears that they are.
            return .flush(eject: false)
        }
    }

}

extension MassStorageDevice {
    /// LBA and block count of READ/WRITE (6), (10), (16).
    static func range(_ cdb: [UInt8], _ op: SCSI.Opcode) -> (UInt64, Int)? {
        switch op {
        case .read6, .write6:
            let lba = UInt64(cdb[1] & 0x1f) << 16 | UInt64(SCSI.be16(cdb, 2))
            return (lba, cdb[4] == 0 ? 256 : Int(cdb[4]))
        case .read10, .write10: return (SCSI.be32(cdb, 2), SCSI.be16(cdb, 7))
        case .read16, .write16:
            let count = SCSI.be32(cdb, 10)
            return count <= UInt64(Int32.max) ? (SCSI.be64(cdb, 2), Int(count)) : nil
        default: return nil
        }
    }
}

extension StickState {
    private mutating func read(lba: UInt64, count: Int) -> SCSIOutcome {
        guard lba <= scsi.blocks, UInt64(count) <= scsi.blocks - lba else { return .failed(.lbaOutOfRange) }
        guard count * Device.blockSize <= Device.maxCommandBytes else { return .failed(.invalidFieldInCDB) }
        return .imageData(offset: lba * UInt64(Device.blockSize), count: count * Device.blockSize)
    }

    private func inquiry(_ cdb: [UInt8]) -> SCSIOutcome {
        let allocation = SCSI.be16(cdb, 3)
        if cdb[1] & 1 != 0 {    // EVPD
            switch cdb[2] {
            case 0x00: return .data(ByteBuffer(bytes: [0, 0, 0, 2, 0x00, 0x80].prefix(allocation)), .none)
            case 0x80:
                let serial = Array(scsi.serial.utf8.prefix(200))
                return .data(ByteBuffer(bytes: ([0, 0x80, 0, UInt8(serial.count)] + serial).prefix(allocation)), .none)
            default: return .failed(.invalidFieldInCDB)
            }
        }
        guard cdb[2] == 0 else { return .failed(.invalidFieldInCDB) }
        // Direct-access, removable, SPC-4, response format 2.
        var data: [UInt8] = [0x00, 0x80, 0x06, 0x02, 31, 0, 0, 0]
        data += SCSI.padded("usbredir", 8) + SCSI.padded("Virtual Disk", 16) + SCSI.padded("1.0", 4)
        return .data(ByteBuffer(bytes: data.prefix(allocation)), .none)
    }

    private func modeSense(_ cdb: [UInt8], ten: Bool) -> SCSIOutcome {
        let page = cdb[2] & 0x3f
        let allocation = ten ? SCSI.be16(cdb, 7) : Int(cdb[4])
        // Caching page (0x08): write cache off (WCE 0), and true: every WRITE
        // is fdatasync'ed before its CSW (write-through), so the guest needs
        // no flush to trust a completed write. SYNCHRONIZE CACHE still fsyncs.
        let caching: [UInt8] = [0x08, 0x12] + Array(repeating: 0, count: 18)
        let pages: [UInt8]
        switch page {
        case 0x3f, 0x08: pages = caching
        case 0x1c, 0x00: pages = []
        default: return .failed(.invalidFieldInCDB)
        }
        let wp: UInt8 = readOnly ? 0x80 : 0
        let header: [UInt8] = ten
            ? SCSI.bytesBE(UInt64(6 + pages.count), count: 2) + [0, wp, 0, 0, 0, 0]
            : [UInt8(3 + pages.count), 0, wp, 0]
        return .data(ByteBuffer(bytes: (header + pages).prefix(allocation)), .none)
    }

    private mutating func startStop(_ cdb: [UInt8]) -> SCSIOutcome {
        let loadEject = cdb[4] & 0x02 != 0, start = cdb[4] & 0x01 != 0
        if loadEject {
            if !start {
                if scsi.preventRemoval { return .failed(SCSI.Sense(key: 0x05, asc: 0x53, ascq: 0x02)) }
                // Eject: every write must be on disk before we say so.
                return .flush(eject: true)
            } else {
                scsi.ejected = false
            }
        }
        return .data(ByteBuffer(), .none)
    }
}
