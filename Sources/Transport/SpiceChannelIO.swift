import Logging
import NIOConcurrencyHelpers
import NIOCore

struct SpiceMessage {
    var type: UInt16
    var body: ByteBuffer
}

/// Frames SPICE messages of one channel: mini header (u16 type, u32 size)
/// or full header (u64 serial, u16 type, u32 size, u32 sub-list), as linked.
struct SpiceFramer {
    let miniHeader: Bool
    /// The serial of the last full-header message.
    private(set) var serial: UInt64 = 0

    init(miniHeader: Bool) {
        self.miniHeader = miniHeader
    }

    var headerSize: Int { miniHeader ? 6 : 18 }

    /// One message in one buffer: header, `prefix`, `body`.
    mutating func frame(type: UInt16, body: ByteBuffer?, prefix: ByteBuffer? = nil) -> ByteBuffer {
        let size = (prefix?.readableBytes ?? 0) + (body?.readableBytes ?? 0)
        var b = ByteBuffer()
        b.reserveCapacity(headerSize + size)
        writeHeader(type: type, size: size, to: &b)
        if let prefix { b.writeImmutableBuffer(prefix) }
        if let body { b.writeImmutableBuffer(body) }
        return b
    }

    /// One message whose body is `parts`: the SPICE header is framed alone
    /// and the parts follow as they are.
    mutating func framed(type: UInt16, parts: [ByteBuffer]) -> [ByteBuffer] {
        var header = ByteBuffer()
        header.reserveCapacity(headerSize)
        writeHeader(type: type, size: parts.reduce(0) { $0 + $1.readableBytes }, to: &header)
        return [header] + parts
    }

    private mutating func writeHeader(type: UInt16, size: Int, to b: inout ByteBuffer) {
        if miniHeader {
            b.writeInteger(type, endianness: .little)
            b.writeInteger(UInt32(size), endianness: .little)
        } else {
            serial += 1
            b.writeInteger(serial, endianness: .little)
            b.writeInteger(type, endianness: .little)
            b.writeInteger(UInt32(size), endianness: .little)
            b.writeInteger(UInt32(0), endianness: .little)
        }
    }
}

/// Writes SPICE messages on one channel; shared by every task that replies.
/// Each message goes out as one buffer so concurrent writers never interleave.
/// (The main channel's; a usbredir channel frames in its SpiceVMCHandler.)
struct SpiceMessageWriter: Sendable {
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let miniHeader: Bool
    private let framer: NIOLockedValueBox<SpiceFramer>

    init(outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, miniHeader: Bool) {
        self.outbound = outbound
        self.miniHeader = miniHeader
        self.framer = NIOLockedValueBox(SpiceFramer(miniHeader: miniHeader))
    }

    func frame(type: UInt16, body: ByteBuffer?, prefix: ByteBuffer? = nil) -> ByteBuffer {
        framer.withLockedValue { $0.frame(type: type, body: body, prefix: prefix) }
    }

    func send(type: UInt16, body: ByteBuffer? = nil, prefix: ByteBuffer? = nil) async throws {
        try await outbound.write(frame(type: type, body: body, prefix: prefix))
    }
}

/// The messages every SPICE channel gets (PING, SET_ACK, NOTIFY,
/// DISCONNECTING, migration), answered the same way on the main channel
/// (SpiceChannelReader) and on usbredir channels (SpiceVMCHandler): this
/// decides, the caller sends.
struct SpiceCommonMessages {
    private(set) var ackWindow: UInt32 = 0
    private var unacked: UInt32 = 0
    private(set) var disconnectReason: UInt32?

    enum Outcome: Equatable {
        /// The channel's own message: the caller's.
        case notCommon
        case handled
        /// Handled; send this reply.
        case reply(type: UInt16, body: ByteBuffer)
    }

    /// Counts a received message (any) for the ack window; true when an ACK
    /// is due now.
    mutating func countForAck() -> Bool {
        guard ackWindow > 0 else { return false }
        unacked += 1
        guard unacked >= ackWindow else { return false }
        unacked = 0
        return true
    }

    mutating func handle(_ m: SpiceMessage, logger: Logger) throws -> Outcome {
        var body = m.body
        switch m.type {
        case Spice.msgPing:
            // PONG echoes id and timestamp, without the padding payload.
            guard let echo = body.readSlice(length: 12) else { throw TransportError.protocolViolation("short PING") }
            return .reply(type: Spice.msgcPong, body: echo)
        case Spice.msgSetAck:
            guard let generation = body.readInteger(endianness: .little, as: UInt32.self),
                  let window = body.readInteger(endianness: .little, as: UInt32.self)
            else { throw TransportError.protocolViolation("short SET_ACK") }
            ackWindow = window
            unacked = 0
            var reply = ByteBuffer()
            reply.writeInteger(generation, endianness: .little)
            return .reply(type: Spice.msgcAckSync, body: reply)
        case Spice.msgNotify:
            logger.notice("SPICE server notice", metadata: ["text": "\(Self.notifyText(body))"])
        case Spice.msgDisconnecting:
            body.moveReaderIndex(forwardBy: min(8, body.readableBytes))
            disconnectReason = body.readInteger(endianness: .little) ?? 0
            logger.debug("SPICE server is disconnecting", metadata: ["reason": "\(disconnectReason ?? 0)"])
        case Spice.msgMigrate, 2, 5, 8:
            break   // migration, wait-for-channels, list: nothing for us to do
        default:
            return .notCommon
        }
        return .handled
    }

    static func notifyText(_ body: ByteBuffer) -> String {
        var b = body
        b.moveReaderIndex(forwardBy: min(20, b.readableBytes))
        guard let len = b.readInteger(endianness: .little, as: UInt32.self),
              let bytes = b.readBytes(length: min(Int(len), b.readableBytes)) else { return "" }
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// Reads SPICE messages on the main channel and answers the messages every
/// channel gets (SpiceCommonMessages) itself, so callers see only their
/// channel's own messages.
final class SpiceChannelReader {
    private let reader: ConnectionReader
    private let writer: SpiceMessageWriter
    private let logger: Logger
    private var common = SpiceCommonMessages()
    var disconnectReason: UInt32? { common.disconnectReason }

    init(reader: ConnectionReader, writer: SpiceMessageWriter, logger: Logger) {
        self.reader = reader
        self.writer = writer
        self.logger = logger
    }

    /// The next message that is not a common one; throws closedByPeer at EOF.
    func next() async throws -> SpiceMessage {
        while true {
            let message = try await readRaw()
            if common.countForAck() { try await writer.send(type: Spice.msgcAck) }
            switch try common.handle(message, logger: logger) {
            case .notCommon: return message
            case .handled: continue
            case .reply(let type, let body): try await writer.send(type: type, body: body)
            }
        }
    }

    private func readRaw() async throws -> SpiceMessage {
        let header = try await reader.readExactly(writer.miniHeader ? 6 : 18)
        let (type, size) = try SpiceWire.messageHeader(header, miniHeader: writer.miniHeader)
        return SpiceMessage(type: type, body: try await reader.readExactly(size))
    }

    static func notifyText(_ body: ByteBuffer) -> String {
        SpiceCommonMessages.notifyText(body)
    }
}
