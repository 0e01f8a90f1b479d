import NIOCore

/// USB Attached SCSI (UAS 1.0, T10/2095-D) as a SuperSpeed stick speaks it
/// in its alternate setting 1: Command IUs on a command pipe; on the status
/// and data pipes the bulk stream ID is the command's tag, so the host keeps
/// many commands queued and the device never waits for the host between them.
enum UAS {
    static let interfaceProtocol: UInt8 = 0x62

    /// Pipe usage descriptor (UAS 5.3.3.1), after each endpoint's own.
    enum Pipe: UInt8 {
        case command = 1, status = 2, dataIn = 3, dataOut = 4

        var usageDescriptor: [UInt8] { [4, 0x24, rawValue, 0] }
    }

    static let commandIU: UInt8 = 0x01, senseIU: UInt8 = 0x03, responseIU: UInt8 = 0x04
    static let taskManagementIU: UInt8 = 0x05

    /// SCSI status in a Sense IU.
    static let good: UInt8 = 0x00, checkCondition: UInt8 = 0x02

    /// A Command IU (UAS 6.2.2): 16 bytes of header, then a 16-byte CDB.
    struct Command: Equatable {
        var tag: UInt16
        var lun: UInt64
        var cdb: [UInt8]
    }

    /// A Task Management IU (UAS 6.2.7).
    struct TaskManagement: Equatable {
        var tag: UInt16
        var function: UInt8
        var taskTag: UInt16
    }

    enum Request: Equatable {
        case command(Command)
        case taskManagement(TaskManagement)
    }

    /// The IU on the command pipe; nil when it is neither (or too short).
    static func request(_ data: ByteBuffer) -> Request? {
        var b = data
        guard b.readableBytes >= 16, let id = b.readInteger(as: UInt8.self), b.readInteger(as: UInt8.self) != nil,
              let tag = b.readInteger(as: UInt16.self) else { return nil }
        switch id {
        case commandIU:
            guard b.readInteger(as: UInt32.self) != nil,   // priority, additional CDB length
                  let lun = b.readInteger(as: UInt64.self), let cdb = b.readBytes(length: 16) else { return nil }
            return .command(Command(tag: tag, lun: lun, cdb: cdb))
        case taskManagementIU:
            guard let function = b.readInteger(as: UInt8.self), b.readInteger(as: UInt8.self) != nil,
                  let taskTag = b.readInteger(as: UInt16.self) else { return nil }
            return .taskManagement(TaskManagement(tag: tag, function: function, taskTag: taskTag))
        default:
            return nil
        }
    }

    /// A Sense IU (UAS 6.2.5): status, and sense data when it failed.
    static func sense(tag: UInt16, sense: SCSI.Sense) -> ByteBuffer {
        let data = sense == .none ? [] : sense.fixedFormat
        var b = ByteBuffer()
        b.writeInteger(senseIU)
        b.writeInteger(UInt8(0))
        b.writeInteger(tag)
        b.writeInteger(UInt16(0))                                   // status qualifier
        b.writeInteger(sense == .none ? good : checkCondition)
        b.writeRepeatingByte(0, count: 7)
        b.writeInteger(UInt16(data.count))
        b.writeBytes(data)
        return b
    }

    /// A Response IU (UAS 6.2.6) to a task management function.
    static func response(tag: UInt16, code: UInt8) -> ByteBuffer {
        ByteBuffer(bytes: [responseIU, 0, UInt8(tag >> 8), UInt8(tag & 0xff), 0, 0, 0, code])
    }

    /// Response codes (UAS 6.2.6): the function is done; it is not supported.
    static let functionComplete: UInt8 = 0x00, functionNotSupported: UInt8 = 0x04
    /// Task management functions (UAS 6.2.4, SAM-5).
    static let abortTask: UInt8 = 0x01, abortTaskSet: UInt8 = 0x02, clearTaskSet: UInt8 = 0x04
    static let logicalUnitReset: UInt8 = 0x08, itNexusReset: UInt8 = 0x10
}
