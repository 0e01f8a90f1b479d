import Logging
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

    func write(_ bytes: ByteBuffer, compressible: Bool) async throws {
        if lz4 && compressible && bytes.readableBytes > Spice.compressionThreshold,
           let compressed = LZ4.compress(bytes) {
            var prefix = ByteBuffer()
            prefix.writeInteger(Spice.vmcCompressionLZ4)
            prefix.writeInteger(UInt32(bytes.readableBytes), endianness: .little)
            try await writer.send(type: Spice.msgVMCCompressedData, body: compressed, prefix: prefix)
            statistics.withLockedValue { $0.messagesOut += 1; $0.compressedMessagesOut += 1 }
        } else {
            try await writer.send(type: Spice.msgVMCData, body: bytes)
            statistics.withLockedValue { $0.messagesOut += 1 }
        }
    }

    func close() { closeChannel() }
}
