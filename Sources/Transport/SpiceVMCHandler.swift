import Logging
import NIOCore

/// A linked SPICE usbredir (SPICEVMC) channel as a pipeline handler, on the
/// channel's event loop, without tasks or locks per message.
///
/// Inbound: SPICE messages are cut from the bytes read (header sizes checked
/// by SpiceWire, at most `Spice.maxMessageSize` buffered); the bodies of
/// SPICEVMC_DATA and the LZ4-decoded bodies of SPICEVMC_COMPRESSED_DATA go
/// on as `ByteBuffer`s of usbredir bytes; the messages every channel gets
/// are answered here (SpiceCommonMessages: PONG, ACK_SYNC, ACK per window),
/// the answers flushed in `channelReadComplete`. A malformed message fires
/// `errorCaught` with a `TransportError` and closes the channel.
///
/// Outbound: each `OutgoingPacket` becomes one VMC message, LZ4-compressed
/// when the server takes it, the packet allows it, it is larger than
/// `Spice.compressionThreshold` and LZ4 has been paying off on this channel
/// (AdaptiveCompression); the write's promise is the message's last buffer's.
///
/// `read()` passes through untouched: a handler after this one holds reads.
/// The statistics are added to the session's in batches (once per read
/// cycle and per flush), not per message.
final class SpiceVMCHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = OutgoingPacket
    typealias OutboundOut = ByteBuffer

    private var framer: SpiceFramer
    private var common = SpiceCommonMessages()
    /// The server advertised SPICEVMC LZ4.
    private let lz4: Bool
    private var compression = AdaptiveCompression()
    private let statistics: SpiceStatisticsBox?
    /// Counted since the last `publishStatistics`.
    private var counted = SpiceStatistics()
    private var hasCounted = false
    private let logger: Logger

    /// Bytes read and not yet cut into messages.
    private var buffer = ByteBuffer()
    /// The header of the message whose body is awaited.
    private var header: (type: UInt16, size: Int)?
    private var decoding = false
    private var failed = false
    private var inactive = false
    private var repliesToFlush = false

    init(miniHeader: Bool, lz4: Bool, statistics: SpiceStatisticsBox?, logger: Logger) {
        self.framer = SpiceFramer(miniHeader: miniHeader)
        self.lz4 = lz4
        self.statistics = statistics
        self.logger = logger
    }

    /// The DISCONNECTING reason, when the server sent one.
    var disconnectReason: UInt32? { common.disconnectReason }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        var chunk = unwrapInboundIn(data)
        if buffer.readableBytes == 0 {
            buffer = chunk
        } else {
            // Only the unread rest is copied (bodies handed on share the old storage).
            buffer = buffer.slice()
            buffer.writeBuffer(&chunk)
        }
        // A handler after us may cause a read to arrive while we are still
        // handing on messages: the loop below takes its bytes too.
        guard !decoding else { return }
        decoding = true
        defer { decoding = false }
        do {
            try decode(context)
        } catch {
            fail(context, error.asTransportError)
        }
    }

    private func decode(_ context: ChannelHandlerContext) throws {
        while !failed, !inactive {
            if header == nil {
                guard let bytes = buffer.readSlice(length: framer.headerSize) else { return }
                header = try SpiceWire.messageHeader(bytes, miniHeader: framer.miniHeader)
            }
            guard let (type, size) = header, let body = buffer.readSlice(length: size) else { return }
            header = nil
            if buffer.readableBytes == 0 { buffer = ByteBuffer() }
            try handle(context, SpiceMessage(type: type, body: body))
        }
    }

    private func handle(_ context: ChannelHandlerContext, _ message: SpiceMessage) throws {
        if common.countForAck() { reply(context, type: Spice.msgcAck, body: nil) }
        switch try common.handle(message, logger: logger) {
        case .handled:
            return
        case .reply(let type, let body):
            reply(context, type: type, body: body)
            return
        case .notCommon:
            break
        }
        switch message.type {
        case Spice.msgVMCData:
            counted.messagesIn += 1
            hasCounted = true
            context.fireChannelRead(wrapInboundOut(message.body))
        case Spice.msgVMCCompressedData:
            let data = try SpiceWire.compressedData(message.body)
            counted.messagesIn += 1
            counted.compressedMessagesIn += 1
            hasCounted = true
            context.fireChannelRead(wrapInboundOut(data))
        default:
            break   // other channel messages carry nothing for usbredir
        }
    }

    private func reply(_ context: ChannelHandlerContext, type: UInt16, body: ByteBuffer?) {
        context.write(wrapOutboundOut(framer.frame(type: type, body: body)), promise: nil)
        repliesToFlush = true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if repliesToFlush {
            repliesToFlush = false
            context.flush()
        }
        publishStatistics()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        inactive = true
        publishStatistics()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        publishStatistics()
    }

    private func fail(_ context: ChannelHandlerContext, _ error: TransportError) {
        guard !failed else { return }
        failed = true
        buffer = ByteBuffer()
        header = nil
        logger.debug("closing a SPICE usbredir channel", metadata: ["error": "\(error)"])
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let packet = unwrapOutboundIn(data)
        let buffers = message(packet.parts, compressible: packet.compressible)
        for b in buffers.dropLast() { context.write(wrapOutboundOut(b), promise: nil) }
        context.write(wrapOutboundOut(buffers[buffers.count - 1]), promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        repliesToFlush = false
        publishStatistics()
        context.flush()
    }

    /// The SPICE message that carries `parts`: LZ4-compressed when the server
    /// takes it, the session allows it, it is large enough and LZ4 has been
    /// paying off on this channel; else as it is.
    private func message(_ parts: [ByteBuffer], compressible: Bool) -> [ByteBuffer] {
        let size = parts.reduce(0) { $0 + $1.readableBytes }
        hasCounted = true
        counted.messagesOut += 1
        if lz4 && compressible && size > Spice.compressionThreshold, compression.shouldTry() {
            counted.compressionAttempts += 1
            let compressed = LZ4.compress(Self.joined(parts, size))
            compression.record(shrank: compressed.map { $0.readableBytes <= size - size / 8 } ?? false)
            if let compressed {
                var prefix = ByteBuffer()
                prefix.writeInteger(Spice.vmcCompressionLZ4)
                prefix.writeInteger(UInt32(size), endianness: .little)
                counted.compressedMessagesOut += 1
                return [framer.frame(type: Spice.msgVMCCompressedData, body: compressed, prefix: prefix)]
            }
        }
        return framer.framed(type: Spice.msgVMCData, parts: parts)
    }

    private static func joined(_ parts: [ByteBuffer], _ size: Int) -> ByteBuffer {
        if parts.count == 1 { return parts[0] }
        var b = ByteBuffer()
        b.reserveCapacity(size)
        for p in parts { b.writeImmutableBuffer(p) }
        return b
    }

    // MARK: Statistics

    private func publishStatistics() {
        guard hasCounted else { return }
        let c = counted
        counted = SpiceStatistics()
        hasCounted = false
        statistics?.withLockedValue { s in
            s.messagesIn += c.messagesIn
            s.compressedMessagesIn += c.compressedMessagesIn
            s.messagesOut += c.messagesOut
            s.compressedMessagesOut += c.compressedMessagesOut
            s.compressionAttempts += c.compressionAttempts
        }
    }
}
