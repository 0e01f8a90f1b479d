import NIOCore

/// Command Block Wrapper (BOT 5.1): 31 bytes, signature "USBC".
struct CommandBlockWrapper {
    static let signature: UInt32 = 0x4342_5355
    var tag: UInt32
    var dataLength: UInt32
    var isIn: Bool
    var command: [UInt8]

    init?(_ data: ByteBuffer) {
        var b = data
        guard b.readableBytes == 31,
              b.readInteger(endianness: .little, as: UInt32.self) == Self.signature,
              let tag = b.readInteger(endianness: .little, as: UInt32.self),
              let length = b.readInteger(endianness: .little, as: UInt32.self),
              let flags = b.readInteger(as: UInt8.self),
              let lun = b.readInteger(as: UInt8.self),
              let cbLength = b.readInteger(as: UInt8.self),
              lun == 0, (1...16).contains(cbLength),
              let cb = b.readBytes(length: 16) else { return nil }
        self.tag = tag
        self.dataLength = length
        self.isIn = flags & 0x80 != 0
        self.command = Array(cb.prefix(Int(cbLength))) + Array(repeating: 0, count: 16 - Int(cbLength))
    }
}

/// Command Status Wrapper (BOT 5.2): 13 bytes, signature "USBS".
struct CommandStatusWrapper: Sendable {
    static let signature: UInt32 = 0x5342_5355
    var tag: UInt32
    var residue: UInt32
    /// 0 passed, 1 failed, 2 phase error.
    var status: UInt8

    var phaseError: CommandStatusWrapper {
        var c = self
        c.status = 2
        return c
    }

    var bytes: ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(Self.signature, endianness: .little)
        b.writeInteger(tag, endianness: .little)
        b.writeInteger(residue, endianness: .little)
        b.writeInteger(status)
        return b
    }
}

enum BulkOnlyState: Sendable {
    struct DataIn: Sendable {
        /// Data made by the command (INQUIRY, MODE SENSE...), still to send.
        var data: ByteBuffer
        /// Image bytes still to send, read on the IN leg, as the host asks.
        var image: ImageRange? = nil
        var sent: Int
        var csw: CommandStatusWrapper
    }

    /// Bytes of the image, read when the host asks for them (bounded by
    /// each IN transfer), not all when the command arrives.
    struct ImageRange: Sendable, Equatable {
        var offset: UInt64
        var count: Int
    }

    struct DataOut: Sendable {
        var expected: Int
        var received: Int
        /// Bytes of the data phase that go to the image (0: discard).
        var writable: Int
        var offset: UInt64
        var sense: SCSI.Sense
        var cswTemplate: CommandStatusWrapper
        var csw: CommandStatusWrapper {
            var c = cswTemplate
            if c.status != 2 { c.status = sense == .none ? 0 : 1 }
            return c
        }
    }

    case idle
    case dataIn(DataIn)
    case dataOut(DataOut)
    case status(CommandStatusWrapper)
}
