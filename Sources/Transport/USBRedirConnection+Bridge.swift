// TEMPORARY BRIDGE, until the session's handler takes the channel (issue
// #20). Today's async session engine reads and writes a connection through
// `reader` and `writer`; they sit on top of the pipeline that
// USBRedirConnection documents. When the new engine adds its own handler
// (`USBRedirConnection.addHandler`), delete this file, the `bridge` property
// of USBRedirConnection and the protocols below in one go.

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

extension USBRedirConnection {
    /// Bridge: the bytes from the peer. Its first `read()` adds the bridge's
    /// handler as the session's handler (so a connection read this way
    /// cannot take another handler).
    public var reader: any USBRedirByteReader { bridge.reader }
    /// Bridge: writes packets through the pipeline from any thread.
    public var writer: any USBRedirByteWriter { bridge.writer }

    /// Bridge: a connection without a channel (tests' in-memory peers).
    /// `channel`, `closeReason` and `addHandler` must not be used on it.
    public init(reader: any USBRedirByteReader, writer: any USBRedirByteWriter, peerDescription: String) {
        self.peerDescription = peerDescription
        self.live = nil
        self.bridge = USBRedirConnectionBridge(reader: reader, writer: writer)
    }
}

/// Bridge: the reader and writer of one connection.
final class USBRedirConnectionBridge: Sendable {
    let reader: any USBRedirByteReader & Sendable
    let writer: any USBRedirByteWriter

    init(channel: Channel, peerCloseReason: PeerCloseReason) {
        self.reader = BridgeReader(channel: channel, peerCloseReason: peerCloseReason)
        self.writer = BridgeWriter(channel: channel)
    }

    init(reader: any USBRedirByteReader, writer: any USBRedirByteWriter) {
        self.reader = UncheckedReader(reader)
        self.writer = writer
    }
}

/// A caller's reader, kept as it was given (it is used by one task).
private final class UncheckedReader: USBRedirByteReader, @unchecked Sendable {
    let base: any USBRedirByteReader
    init(_ base: any USBRedirByteReader) { self.base = base }
    func read() async throws -> ByteBuffer? { try await base.read() }
}

/// Reads through a `BridgeHandler` added on first use. Like the
/// NIOAsyncChannel reader it replaces: one chunk per read, buffered chunks
/// before an error, EOF as nil (raw) or as the SPICE close reason.
private final class BridgeReader: USBRedirByteReader, Sendable {
    private let channel: Channel
    private let peerCloseReason: PeerCloseReason
    private let handler: NIOLoopBoundBox<BridgeHandler?>

    init(channel: Channel, peerCloseReason: PeerCloseReason) {
        self.channel = channel
        self.peerCloseReason = peerCloseReason
        self.handler = NIOLoopBoundBox.makeEmptyBox(valueType: BridgeHandler.self, eventLoop: channel.eventLoop)
    }

    func read() async throws -> ByteBuffer? {
        let channel = self.channel, box = self.handler
        let next: ByteBuffer?
        do {
            next = try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<ByteBuffer?> in
                if box.value == nil {
                    let handler = BridgeHandler()
                    do {
                        try USBRedirConnection.addHandler(handler, to: channel)
                    } catch {
                        // Closed before the first read: what it held is gone.
                        handler.finished = .success(())
                    }
                    box.value = handler
                }
                return box.value!.next(on: channel.eventLoop)
            }.get()
        } catch {
            throw error.asTransportError
        }
        if next == nil, !peerCloseReason.isImmediate {
            // SPICE: tell a VM that went away from a client that displaced us.
            throw await peerCloseReason.value()
        }
        return next
    }
}

/// The bridge's session handler: buffers chunks for `BridgeReader`, holding
/// reads while `high` chunks wait (as NIOAsyncChannel does by default).
private final class BridgeHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = OutgoingPacket
    static let high = 10, low = 2

    private var chunks = CircularBuffer<ByteBuffer>()
    var finished: Result<Void, Error>?
    private var waiting: EventLoopPromise<ByteBuffer?>?
    private var readHeld = false
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        if finished == nil { finished = .success(()) }
        wake()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        chunks.append(unwrapInboundIn(data))
        wake()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if finished == nil { finished = .failure(error) }
        wake()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if finished == nil { finished = .success(()) }
        wake()
        context.fireChannelInactive()
    }

    func read(context: ChannelHandlerContext) {
        if chunks.count >= Self.high { readHeld = true } else { context.read() }
    }

    func next(on eventLoop: EventLoop) -> EventLoopFuture<ByteBuffer?> {
        if let chunk = take() { return eventLoop.makeSucceededFuture(chunk) }
        switch finished {
        case .success?: return eventLoop.makeSucceededFuture(nil)
        case .failure(let error)?: return eventLoop.makeFailedFuture(error)
        case nil:
            let promise = eventLoop.makePromise(of: ByteBuffer?.self)
            waiting = promise
            return promise.futureResult
        }
    }

    private func take() -> ByteBuffer? {
        guard let chunk = chunks.popFirst() else { return nil }
        if readHeld, chunks.count <= Self.low, let context {
            readHeld = false
            context.read()
        }
        return chunk
    }

    private func wake() {
        guard let promise = waiting else { return }
        if let chunk = take() {
            waiting = nil
            promise.succeed(chunk)
        } else if let finished {
            waiting = nil
            switch finished {
            case .success: promise.succeed(nil)
            case .failure(let error): promise.fail(error)
            }
        }
    }
}

/// Writes each burst in one event-loop task: nothing else comes between its
/// packets, bursts go out in the order given, one flush per burst.
private struct BridgeWriter: USBRedirByteWriter {
    let channel: Channel

    func enqueue(_ packets: [OutgoingPacket], written: @escaping @Sendable (Bool) -> Void) {
        let channel = self.channel
        // A writer on the channel's own loop (the session's) writes now:
        // the loop runs nothing else meanwhile, so the order holds.
        if channel.eventLoop.inEventLoop { return Self.write(packets, to: channel, written) }
        channel.eventLoop.execute { Self.write(packets, to: channel, written) }
    }

    private static func write(_ packets: [OutgoingPacket], to channel: Channel,
                              _ written: @escaping @Sendable (Bool) -> Void) {
        guard let last = packets.last else {
            written(channel.isActive)
            return
        }
        let operations = channel.pipeline.syncOperations
        let promise = channel.eventLoop.makePromise(of: Void.self)
        for packet in packets.dropLast() { operations.write(NIOAny(packet), promise: nil) }
        operations.writeAndFlush(NIOAny(last), promise: promise)
        promise.futureResult.whenComplete { result in
            if case .success = result { written(true) } else { written(false) }
        }
    }

    func close() { channel.close(promise: nil) }

    func whenClosed(_ callback: @escaping @Sendable () -> Void) {
        channel.closeFuture.whenComplete { _ in callback() }
    }
}
