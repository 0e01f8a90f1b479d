/// SCSI numbers used by the mass-storage device (SPC-4, SBC-3).
enum SCSI {
    enum Opcode: UInt8 {
        case testUnitReady = 0x00, requestSense = 0x03, read6 = 0x08, write6 = 0x0a, inquiry = 0x12
        case modeSense6 = 0x1a, startStopUnit = 0x1b, preventAllowMediumRemoval = 0x1e
        case readFormatCapacities = 0x23, readCapacity10 = 0x25, read10 = 0x28, write10 = 0x2a
        case verify10 = 0x2f, synchronizeCache10 = 0x35, modeSense10 = 0x5a, read16 = 0x88
        case write16 = 0x8a, verify16 = 0x8f, synchronizeCache16 = 0x91, serviceActionIn16 = 0x9e
    }

    /// Sense key, additional sense code and qualifier of a failed command.
    struct Sense: Equatable, Sendable {
        var key: UInt8
        var asc: UInt8
        var ascq: UInt8

        static let none = Sense(key: 0, asc: 0, ascq: 0)
        static let invalidOpcode = Sense(key: 0x05, asc: 0x20, ascq: 0)
        static let lbaOutOfRange = Sense(key: 0x05, asc: 0x21, ascq: 0)
        static let invalidFieldInCDB = Sense(key: 0x05, asc: 0x24, ascq: 0)
        static let writeProtected = Sense(key: 0x07, asc: 0x27, ascq: 0)
        static let mediumNotPresent = Sense(key: 0x02, asc: 0x3a, ascq: 0)
        static let readError = Sense(key: 0x03, asc: 0x11, ascq: 0)
        static let writeError = Sense(key: 0x03, asc: 0x0c, ascq: 0)
        static let logicalUnitNotSupported = Sense(key: 0x05, asc: 0x25, ascq: 0)

        /// Fixed-format sense data (SPC-4, 4.5.3), 18 bytes.
        var fixedFormat: [UInt8] {
            [0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0]
        }
    }

    static func be16(_ b: [UInt8], _ i: Int) -> Int { Int(b[i]) << 8 | Int(b[i + 1]) }
    static func be32(_ b: [UInt8], _ i: Int) -> UInt64 { UInt64(be16(b, i)) << 16 | UInt64(be16(b, i + 2)) }
    static func be64(_ b: [UInt8], _ i: Int) -> UInt64 { be32(b, i) << 32 | be32(b, i + 4) }

    static func bytesBE(_ v: UInt64, count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64(count - 1 - $0))) }
    }

    static func padded(_ s: String, _ n: Int) -> [UInt8] {
        Array((Array(s.utf8.prefix(n)) + Array(repeating: 0x20, count: n)).prefix(n))
    }
}
