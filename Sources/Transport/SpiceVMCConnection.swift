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
    let meter = NIOLockedValueBox(LZ4Meter())

    func write(_ bytes: ByteBuffer, compressible: Bool) async throws {
        if shouldTry(bytes.readableBytes, compressible: compressible), try await sendCompressed(bytes) { return }
        try await writer.send(type: Spice.msgVMCData, body: bytes)
        statistics.withLockedValue { $0.messagesOut += 1 }
    }

    /// Header and payload as one SPICEVMC_DATA message without copying the
    /// payload; joined only when LZ4 is worth trying (it reads it all anyway).
    func write(header: ByteBuffer, payload: ByteBuffer, compressible: Bool) async throws {
        if shouldTry(header.readableBytes + payload.readableBytes, compressible: compressible) {
            var joined = header
            joined.writeImmutableBuffer(payload)
            if try await sendCompressed(joined) { return }
        }
        try await writer.send(type: Spice.msgVMCData, head: header, tail: payload)
        statistics.withLockedValue { $0.messagesOut += 1 }
    }

    private func shouldTry(_ size: Int, compressible: Bool) -> Bool {
        lz4 && compressible && size > Spice.compressionThreshold && meter.withLockedValue { $0.shouldTry() }
    }

    /// True when sent as COMPRESSED_DATA (false: it did not shrink).
    private func sendCompressed(_ bytes: ByteBuffer) async throws -> Bool {
        let compressed = LZ4.compress(bytes)
        meter.withLockedValue { $0.record(original: bytes.readableBytes, compressed: compressed?.readableBytes) }
        guard let compressed else { return false }
        var prefix = ByteBuffer()
        prefix.writeInteger(Spice.vmcCompressionLZ4)
        prefix.writeInteger(UInt32(bytes.readableBytes), endianness: .little)
        try await writer.send(type: Spice.msgVMCCompressedData, body: compressed, prefix: prefix)
        statistics.withLockedValue { $0.messagesOut += 1; $0.compressedMessagesOut += 1 }
        return true
    }

    func close() { closeChannel() }
}

/// LZ4 only while it has been shrinking this channel's data: after
/// `missesBeforePause` frames in a row that did not shrink by an eighth,
/// the next `pause` frames go uncompressed, then one is tried again; each
/// further miss doubles the pause (up to `maxPause`), a hit ends it.
struct LZ4Meter: Sendable {
    static let missesBeforePause = 4
    static let firstPause = 32
    static let maxPause = 4096

    private var misses = 0
    private var pause = 0
    private var skipLeft = 0

    mutating func shouldTry() -> Bool {
        guard skipLeft == 0 else { skipLeft -= 1; return false }
        return true
    }

    mutating func record(original: Int, compressed: Int?) {
        if let compressed, compressed <= original - original / 8 {
            misses = 0
            pause = 0
            return
        }
        misses += 1
        if misses >= Self.missesBeforePause {
            pause = pause == 0 ? Self.firstPause : min(pause * 2, Self.maxPause)
            skipLeft = pause
        }
    }
}
