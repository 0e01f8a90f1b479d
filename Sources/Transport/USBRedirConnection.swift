import NIOCore

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

/// A live usbredir connection, raw or SPICE alike: a NIO `Channel` whose
/// pipeline speaks usbredir bytes. It is handed to a body that runs for the
/// connection's lifetime (`RawUSBRedir.withConnection`,
/// `RawUSBRedirListener.serve`, `SpiceSession.withUSBRedirChannel`); the
/// channel closes when the body returns.
///
/// ## The pipeline's contract
///
/// - **Inbound** the transport's handlers fire `ByteBuffer`s of usbredir
///   bytes, in order, cut anywhere (raw: as read from the socket; SPICE: the
///   bodies of SPICEVMC_DATA messages and the decompressed bodies of
///   SPICEVMC_COMPRESSED_DATA). Everything else SPICE sends (PING, SET_ACK,
///   NOTIFY, ...) is answered inside the transport and never seen.
/// - **Outbound** they take `OutgoingPacket`s, one usbredir packet each (raw:
///   written as they are; SPICE: one VMC message per packet, LZ4 when it
///   pays). A write's promise completes once the packet is on the socket;
///   `flush` as usual (the session flushes in its `channelReadComplete`).
/// - **Errors**: a malformed frame or LZ4 body, a TLS or socket error fires
///   `errorCaught` with the error (the transport's own as `TransportError`)
///   and closes the channel.
/// - **Backpressure**: the transport's handlers never call `read()` on their
///   own and pass every `read()` through, so the session's handler holds
///   reads by not passing `read()` on (autoRead stays on).
/// - Everything runs on `channel.eventLoop`; nothing of the transport waits,
///   spawns tasks or takes locks per message.
///
/// ## How a session takes the channel
///
/// Until a session's handler is added, the transport's last handler holds
/// what arrives (and the read requests, so that is at most one read's
/// worth). The session adds its handler with `addHandler(_:)`, on the
/// channel's event loop:
///
///     try await connection.channel.eventLoop.submit {
///         try connection.addHandler(SessionHandler(...))
///     }.get()
///
/// The handler is added at the end of the pipeline, then gets what was held
/// (reads, errors, `channelInactive`) in order, then reads go on.
/// `channelActive` has passed by then: look at `context.channel.isActive`
/// in `handlerAdded`. When `addHandler` throws, the connection has already
/// ended: `closeReason` says why. The body that received the connection
/// keeps it open while the handler works (await `channel.closeFuture`,
/// say): the channel closes when the body returns.
///
/// ## Why it closed
///
/// `closeReason` completes once the channel has closed: with the first
/// error the transport saw (`TransportError`; others mapped as
/// `Error.asTransportError`), `.closedLocally` when it was closed from our
/// side (`channel.close()` or a handler after the transport's), else the
/// reason the peer left as the transport knows it: `.closedByPeer` for raw;
/// for SPICE the main channel's reason when it closes with this one
/// (`.displaced`, `.droppedByServer`, ...; found within 3 s) or
/// `.closedByPeer`.
///
/// `reader` and `writer` (USBRedirConnection+Bridge.swift) are a temporary
/// bridge for today's async session engine, until the session's handler
/// takes the channel.
public struct USBRedirConnection: Sendable {
    /// Human-readable peer, for logs ("spice 127.0.0.1:5930 channel 1").
    public let peerDescription: String
    /// The channel, its handler and close reason; nil only for a memory
    /// connection of the bridge (`init(reader:writer:peerDescription:)`).
    let live: Live?
    /// Temporary: today's engine reads and writes through it
    /// (USBRedirConnection+Bridge.swift).
    let bridge: USBRedirConnectionBridge

    struct Live: Sendable {
        let channel: Channel
        let closeReason: EventLoopFuture<TransportError>
    }

    init(channel: Channel, closeReason: EventLoopFuture<TransportError>, peerDescription: String,
         peerCloseReason: PeerCloseReason) {
        self.peerDescription = peerDescription
        self.live = Live(channel: channel, closeReason: closeReason)
        self.bridge = USBRedirConnectionBridge(channel: channel, peerCloseReason: peerCloseReason)
    }

    /// The connection's channel; its pipeline ends with the transport's
    /// handlers (see the type's documentation).
    public var channel: Channel {
        guard let live else { preconditionFailure("a memory connection (bridge) has no channel") }
        return live.channel
    }

    /// The channel; nil for a memory connection (the bridge's).
    public var liveChannel: Channel? { live?.channel }

    /// Completes once the channel has closed, with why (see the type's
    /// documentation); never fails.
    public var closeReason: EventLoopFuture<TransportError> {
        guard let live else { preconditionFailure("a memory connection (bridge) has no channel") }
        return live.closeReason
    }

    /// Adds the session's `handler` at the end of the pipeline and starts
    /// delivering to it what the transport held until now. Call once, on
    /// `channel.eventLoop`. Throws when the channel has closed already.
    public func addHandler(_ handler: ChannelHandler) throws {
        try Self.addHandler(handler, to: channel)
    }

    static func addHandler(_ handler: ChannelHandler, to channel: Channel) throws {
        channel.eventLoop.preconditionInEventLoop()
        let operations = channel.pipeline.syncOperations
        let gate = try operations.handler(type: USBRedirSessionGate.self)
        try operations.addHandler(handler, position: .after(gate))
        gate.open()
    }

    /// Runs `body` (the connection's lifetime), then closes the channel and
    /// waits until it has closed.
    func runThenClose<R: Sendable>(_ body: (USBRedirConnection) async throws -> R) async throws -> R {
        let result: Result<R, Error>
        do { result = .success(try await body(self)) } catch { result = .failure(error) }
        channel.close(promise: nil)
        try? await channel.closeFuture.get()
        return try result.get()
    }
}
