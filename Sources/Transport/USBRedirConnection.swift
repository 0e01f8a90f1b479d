import NIOCore

/// The session layer's view of a transport: a duplex stream of usbredir bytes.
/// Reading is done by one task; the session hands its packets to the writer
/// without waiting (in bursts, in its order), and learns from each burst's
/// `written` report what the socket has taken.
public protocol USBRedirByteReader: AnyObject {
    /// The next bytes from the peer, in order; nil when the peer closed cleanly.
    /// Throws `TransportError` when the connection broke.
    func read() async throws -> ByteBuffer?
}

public protocol USBRedirByteWriter: Sendable {
    /// Queues a burst of packets and returns at once; bursts reach the peer
    /// in the order of the calls, each sent together (one flush). `written`
    /// runs once the burst is on the socket (true) or the connection failed
    /// (false), on a thread of the transport's choosing.
    func enqueue(_ packets: [OutgoingPacket], written: @escaping @Sendable (Bool) -> Void)
    /// Closes the connection; a pending read ends.
    func close()
    /// Runs `callback` once the connection is closed, by either side (at
    /// once if it is already): a session that stopped reading (its budget is
    /// full) learns of the end without reading it.
    func whenClosed(_ callback: @escaping @Sendable () -> Void)
}

/// One usbredir packet as the session hands it over: header, then payload
/// (not joined, so the payload is never copied), and the session's
/// compression hint (never for devices with isochronous endpoints).
public struct OutgoingPacket: Sendable {
    public var parts: [ByteBuffer]
    public var compressible: Bool

    public init(parts: [ByteBuffer], compressible: Bool) {
        self.parts = parts
        self.compressible = compressible
    }
}

/// A live usbredir connection: handed to a body that runs for its lifetime.
public struct USBRedirConnection {
    public let reader: any USBRedirByteReader
    public let writer: any USBRedirByteWriter
    /// Human-readable peer, for logs ("spice 127.0.0.1:5930 channel 1").
    public let peerDescription: String

    public init(reader: any USBRedirByteReader, writer: any USBRedirByteWriter, peerDescription: String) {
        self.reader = reader
        self.writer = writer
        self.peerDescription = peerDescription
    }
}
