import Logging
import NIOConcurrencyHelpers
import NIOCore

struct SpiceMessage {
    var type: UInt16
    var body: ByteBuffer
}

/// Writes SPICE messages on one channel; shared by every task that replies.
/// Each message goes out as one buffer so concurrent writers never interleave.
struct SpiceMessageWriter: Sendable {
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let miniHeader: Bool
    private let serial = NIOLockedValueBox<UInt64>(0)

    init(outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, miniHeader: Bool) {
        self.outbound = outbound
        self.miniHeader = miniHeader
    }

    func frame(type: UInt16, body: ByteBuffer?, prefix: ByteBuffer? = nil) -> ByteBuffer {
        let size = (prefix?.readableBytes ?? 0) + (body?.readableBytes ?? 0)
        var b = ByteBuffer()
        b.reserveCapacity(18 + size)
        if miniHeader {
            b.writeInteger(type, endianness: .little)
            b.writeInteger(UInt32(size), endianness: .little)
        } else {
            let s = serial.withLockedValue { $0 += 1; return $0 }
            b.writeInteger(s, endianness: .little)
            b.writeInteger(type, endianness: .little)
            b.writeInteger(UInt32(size), endianness: .little)
            b.writeInteger(UInt32(0), endianness: .little)
        }
        if let prefix { b.writeImmutableBuffer(prefix) }
        if let body { b.writeImmutableBuffer(body) }
        return b
    }

    func send(type: UInt16, body: ByteBuffer? = nil, prefix: ByteBuffer? = nil) async throws {
        try await outbound.write(frame(type: type, body: body, prefix: prefix))
    }

    /// One message whose body is `parts`: the SPICE header is framed alone
    /// and the parts follow as they are.
    func framed(type: UInt16, parts: [ByteBuffer]) -> [ByteBuffer] {
        var header = frame(type: type, body: nil)
        let size = parts.reduce(0) { $0 + $1.readableBytes }
        // frame() wrote size 0: patch the size field (last u32 of a mini
        // header, the one before the sub-list offset of a full one).
        header.setInteger(UInt32(size), at: header.writerIndex - (miniHeader ? 4 : 8), endianness: .little)
        return [header] + parts
    }
}

/// Reads SPICE messages on one channel and answers the messages every
/// channel gets (PING, SET_ACK, NOTIFY, DISCONNECTING) itself, so callers
/// see only their channel's own messages.
final class SpiceChannelReader {
    private let reader: ConnectionReader
    private let writer: SpiceMessageWriter
    private let logger: Logger
    private var ackWindow: UInt32 = 0
    private var unacked: UInt32 = 0
    private(set) var disconnectReason: UInt32?

    init(reader: ConnectionReader, writer: SpiceMessageWriter, logger: Logger) {
        self.reader = reader
        self.writer = writer
        self.logger = logger
    }

    /// The next message that is not a common one; throws closedByPeer at EOF.
    func next() async throws -> SpiceMessage {
        while true {
            let message = try await readRaw()
            try await countForAck()
            if try await handleCommon(message) { continue }
            return message
        }
    }

    private func readRaw() async throws -> SpiceMessage {
        let header = try await reader.readExactly(writer.miniHeader ? 6 : 18)
        let (type, size) = try SpiceWire.messageHeader(header, miniHeader: writer.miniHeader)
        return SpiceMessage(type: type, body: try await reader.readExactly(size))
    }

    private func countForAck() async throws {
        guard ackWindow > 0 else { return }
        unacked += 1
        if unacked >= ackWindow {
            unacked = 0
            try await writer.send(type: Spice.msgcAck)
        }
    }

    private func handleCommon(_ m: SpiceMessage) async throws -> Bool {
        var body = m.body
        switch m.type {
        case Spice.msgPing:
            // PONG echoes id and timestamp, without the padding payload.
            guard let echo = body.readSlice(length: 12) else { throw TransportError.protocolViolation("short PING") }
            try await writer.send(type: Spice.msgcPong, body: echo)
        case Spice.msgSetAck:
            guard let generation = body.readInteger(endianness: .little, as: UInt32.self),
                  let window = body.readInteger(endianness: .little, as: UInt32.self)
            else { throw TransportError.protocolViolation("short SET_ACK") }
            ackWindow = window
            unacked = 0
            var reply = ByteBuffer()
            reply.writeInteger(generation, endianness: .little)
            try await writer.send(type: Spice.msgcAckSync, body: reply)
        case Spice.msgNotify:
            logger.notice("SPICE server notice", metadata: ["text": "\(Self.notifyText(body))"])
        case Spice.msgDisconnecting:
            body.moveReaderIndex(forwardBy: min(8, body.readableBytes))
            disconnectReason = body.readInteger(endianness: .little) ?? 0
            logger.debug("SPICE server is disconnecting", metadata: ["reason": "\(disconnectReason ?? 0)"])
        case Spice.msgMigrate, 2, 5, 8:
            break   // migration, wait-for-channels, list: nothing for us to do
        default:
            return false
        }
        return true
    }

    static func notifyText(_ body: ByteBuffer) -> String {
        var b = body
        b.moveReaderIndex(forwardBy: min(20, b.readableBytes))
        guard let len = b.readInteger(endianness: .little, as: UInt32.self),
              let bytes = b.readBytes(length: min(Int(len), b.readableBytes)) else { return "" }
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}
