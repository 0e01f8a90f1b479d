import NIOConcurrencyHelpers
import NIOCore

/// The transport's last handler on a usbredir channel. Until the session's
/// handler is added after it (`USBRedirConnection.addHandler`), it holds the
/// inbound events and the `read()` requests (with autoRead on, NIO asks for
/// the next read after each one: holding it bounds what is held to one
/// read's worth); then it replays them in order and only passes things on.
/// It also learns why the channel closed (`closeReason`).
final class USBRedirSessionGate: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = OutgoingPacket
    typealias OutboundOut = OutgoingPacket

    private enum Held {
        case read(NIOAny)
        case readComplete
        case error(Error)
        case inactive
        case event(Any)
    }

    /// nil once open (everything passes).
    private var held: [Held]? = []
    private var readHeld = false
    private var context: ChannelHandlerContext?

    private var firstError: TransportError?
    private var closedLocally = false
    private let reason: EventLoopPromise<TransportError>
    private let peerCloseReason: PeerCloseReason

    /// Completes once the channel has closed (USBRedirConnection.closeReason).
    var closeReason: EventLoopFuture<TransportError> { reason.futureResult }

    init(eventLoop: EventLoop, peerCloseReason: PeerCloseReason) {
        self.reason = eventLoop.makePromise(of: TransportError.self)
        self.peerCloseReason = peerCloseReason
    }

    deinit {
        // A channel whose pipeline was never torn down (EmbeddedChannel).
        if !reasonCompleted { reason.succeed(firstError ?? .closedLocally) }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The pipeline is torn down after channelInactive; a channel that
        // never became active gets here without it.
        completeReason()
        self.context = nil
    }

    /// Replays what was held to the handlers after this one and lets
    /// everything pass from now on. Events that arrive while replaying are
    /// queued behind.
    func open() {
        guard let context, held != nil else { return }
        while let first = held?.first {
            held?.removeFirst()
            switch first {
            case .read(let data): context.fireChannelRead(data)
            case .readComplete: context.fireChannelReadComplete()
            case .error(let error): context.fireErrorCaught(error)
            case .inactive: context.fireChannelInactive()
            case .event(let event): context.fireUserInboundEventTriggered(event)
            }
        }
        held = nil
        if readHeld {
            readHeld = false
            // From the pipeline's tail, so the session's handler may hold it.
            if context.channel.isActive { context.pipeline.syncOperations.read() }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if held != nil { held!.append(.read(data)) } else { context.fireChannelRead(data) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if held != nil { held!.append(.readComplete) } else { context.fireChannelReadComplete() }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if firstError == nil { firstError = error.asTransportError }
        if held != nil { held!.append(.error(error)) } else { context.fireErrorCaught(error) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        completeReason()
        if held != nil { held!.append(.inactive) } else { context.fireChannelInactive() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if held != nil { held!.append(.event(event)) } else { context.fireUserInboundEventTriggered(event) }
    }

    func read(context: ChannelHandlerContext) {
        if held != nil { readHeld = true } else { context.read() }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // From the tail: the session, the bridge or channel.close().
        if mode == .all { closedLocally = true }
        context.close(mode: mode, promise: promise)
    }

    private var reasonCompleted = false

    private func completeReason() {
        guard !reasonCompleted else { return }
        reasonCompleted = true
        if let firstError {
            reason.succeed(firstError)
        } else if closedLocally {
            reason.succeed(.closedLocally)
        } else if peerCloseReason.isImmediate {
            reason.succeed(.closedByPeer)
        } else {
            let peer = peerCloseReason
            reason.completeWithTask { await peer.value() }
        }
    }
}

/// Why the peer closed a usbredir channel, as the transport can tell: raw
/// knows nothing more than `.closedByPeer`; SPICE asks its session
/// (`SpiceSession.reasonAfterChannelClosed`). Worked out once, on first use.
final class PeerCloseReason: Sendable {
    private let compute: (@Sendable () async -> TransportError)?
    private let task = NIOLockedValueBox<Task<TransportError, Never>?>(nil)

    init(_ compute: (@Sendable () async -> TransportError)?) {
        self.compute = compute
    }

    static var closedByPeer: PeerCloseReason { PeerCloseReason(nil) }

    /// `.closedByPeer` without asking anyone.
    var isImmediate: Bool { compute == nil }

    func value() async -> TransportError {
        guard let compute else { return .closedByPeer }
        let task = self.task.withLockedValue { task in
            if let task { return task }
            let new = Task { await compute() }
            task = new
            return new
        }
        return await task.value
    }
}
