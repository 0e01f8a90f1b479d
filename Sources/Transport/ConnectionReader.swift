import NIOCore

/// Buffered reads of exact sizes over a NIO inbound stream; used by the SPICE
/// link handshake and framing. Owned by a single task.
final class ConnectionReader {
    private var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private var buffer = ByteBuffer()

    init(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>) {
        self.iterator = inbound.makeAsyncIterator()
    }

    /// Exactly `count` bytes; throws `closedByPeer` if the stream ends first.
    func readExactly(_ count: Int) async throws -> ByteBuffer {
        while buffer.readableBytes < count {
            guard var chunk = try await iterator.next() else { throw TransportError.closedByPeer }
            if buffer.readableBytes == 0 {
                buffer = chunk
            } else {
                buffer.discardReadBytes()
                buffer.writeBuffer(&chunk)
            }
        }
        return buffer.readSlice(length: count)!
    }
}
