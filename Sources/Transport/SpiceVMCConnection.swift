import Logging
import NIOConcurrencyHelpers
import NIOCore

/// usbredir bytes carried in SPICEVMC_DATA / COMPRESSED_DATA messages.
final class SpiceVMCReader: USBRedirByteReader {
    private let channel: SpiceChannelReader
    private let onClose: () async -> TransportError
    private let statistics: SpiceStatisticsBox

    init(channel: SpiceChannelReader, statistics: SpiceStatisticsBox, onClose: @escaping () async -> TransportError) {
        self.channel = channel
        self.statistics = statistics
        self.onClose = onClose
    }

    func read() async throws -> ByteBuffer? {
        while true {
            let message: SpiceMessage
            do {
                message = try await channel.next()
            } catch TransportError.closedByPeer {
                // Tell a VM that went away from a client that displaced us.
                throw await onClose()
            } catch let error as TransportError {
                throw error
            } catch {
                throw error.asTransportError
            }
            switch message.type {
            case Spice.msgVMCData:
                statistics.withLockedValue { $0.messagesIn += 1 }
                return message.body
            case Spice.msgVMCCompressedData:
                let data = try SpiceWire.compressedData(message.body)
                statistics.withLockedValue { $0.messagesIn += 1; $0.compressedMessagesIn += 1 }
                return data
            default:
                continue   // other channel messages carry nothing for usbredir
            }
        }
    }
}

struct SpiceVMCWriter: USBRedirByteWriter {
    let writer: SpiceMessageWriter
    let statistics: SpiceStatisticsBox
    /// The server advertised SPICEVMC LZ4.
    let lz4: Bool
    let closeChannel: @Sendable () -> Void
    /// Whether LZ4 has been paying off on this channel's data.
    let compression = NIOLockedValueBox(AdaptiveCompression())

    /// Queued without waiting (see OrderedChannelWriter), as the engine sends.
    let ordered: OrderedChannelWriter

    /// One SPICE message per packet (LZ4 is decided per packet).
    func enqueue(_ packets: [OutgoingPacket], written: @escaping @Sendable (Bool) -> Void) {
        ordered.write(packets.flatMap { message($0.parts, compressible: $0.compressible) }, written: written)
    }

    /// The SPICE message that carries `parts`: LZ4-compressed when the server
    /// takes it, the session allows it, it is large enough and LZ4 has been
    /// paying off on this channel; else as it is.
    private func message(_ parts: [ByteBuffer], compressible: Bool) -> [ByteBuffer] {
        let size = parts.reduce(0) { $0 + $1.readableBytes }
        if lz4 && compressible && size > Spice.compressionThreshold,
           compression.withLockedValue({ $0.shouldTry() }) {
            statistics.withLockedValue { $0.compressionAttempts += 1 }
            let compressed = LZ4.compress(Self.joined(parts, size))
            compression.withLockedValue { $0.record(shrank: compressed.map { $0.readableBytes <= size - size / 8 } ?? false) }
            if let compressed {
                var prefix = ByteBuffer()
                prefix.writeInteger(Spice.vmcCompressionLZ4)
                prefix.writeInteger(UInt32(size), endianness: .little)
                statistics.withLockedValue { $0.messagesOut += 1; $0.compressedMessagesOut += 1 }
                return [writer.frame(type: Spice.msgVMCCompressedData, body: compressed, prefix: prefix)]
            }
        }
        statistics.withLockedValue { $0.messagesOut += 1 }
        return writer.framed(type: Spice.msgVMCData, parts: parts)
    }

    private static func joined(_ parts: [ByteBuffer], _ size: Int) -> ByteBuffer {
        if parts.count == 1 { return parts[0] }
        var b = ByteBuffer()
        b.reserveCapacity(size)
        for p in parts { b.writeImmutableBuffer(p) }
        return b
    }

    func close() { closeChannel() }

    func whenClosed(_ callback: @escaping @Sendable () -> Void) { ordered.whenClosed(callback) }
}
