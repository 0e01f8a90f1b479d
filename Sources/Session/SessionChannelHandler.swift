import Logging
import NIOCore
import Transport
import USBRedirProtocol

/// The session's handler at the end of its connection's pipeline, on the
/// session's own event loop (issue #20). What the VM sends goes to the
/// engine in the loop's turn: packets that need no waiting (transfers with
/// room in the budget, answered at once by a device that has the answer)
/// are handled and replied to before `channelRead` returns, with no task
/// and no thread hop. A packet that must wait (the device's configuration,
/// the budget, a stream's start) is handed to the engine's `drain`, and
/// reading pauses (`read` is held) until it is done: backpressure by not
/// reading. `ended` completes once the connection is gone and no drain
/// runs any more.
final class SessionChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = OutgoingPacket
    typealias OutboundOut = OutgoingPacket

    private let engine: SessionEngine
    private let closeReason: EventLoopFuture<TransportError>
    private let ended: EventLoopPromise<SessionEnd>
    private let logger: Logger
    /// The engine's drain runs: reads wait.
    private var draining = false
    private var readHeld = false
    /// The end the session decided (malformed bytes, the VM's filter).
    private var decided: SessionEnd?
    private var inactive = false

    init(engine: SessionEngine, closeReason: EventLoopFuture<TransportError>, ended: EventLoopPromise<SessionEnd>,
         logger: Logger) {
        self.engine = engine
        self.closeReason = closeReason
        self.ended = ended
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard decided == nil else { return }
        do {
            switch try engine.assumeIsolated({ try $0.receiveInTurn(bytes) }) {
            case .handled: break
            case .mustWait: startDrain(context)
            case .ended(let end): finish(context, end)
            }
        } catch {
            malformed(context, error)
        }
    }

    func read(context: ChannelHandlerContext) {
        if draining { readHeld = true } else { context.read() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        inactive = true
        endIfDone(context)
        context.fireChannelInactive()
    }

    /// The transport closes the channel after its errors; `closeReason` says why.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    // MARK: Waiting packets

    private func startDrain(_ context: ChannelHandlerContext) {
        guard !draining else { return }
        draining = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let engine = self.engine
        // The task prefers the session's loop, which is this channel's
        // (RedirectionSession takes the channel only then): it resumes here.
        Task(executorPreference: engine.loop) {
            let result: Result<SessionEnd?, Error>
            do { result = .success(try await engine.drain()) } catch { result = .failure(error) }
            let (handler, context) = bound.value
            handler.drained(context, result)
        }
    }

    private func drained(_ context: ChannelHandlerContext, _ result: Result<SessionEnd?, Error>) {
        draining = false
        switch result {
        case .success(let end?): finish(context, end)
        case .success(nil):
            if readHeld && !inactive {
                readHeld = false
                context.read()
            }
        case .failure(let error): malformed(context, error)
        }
        endIfDone(context)
    }

    // MARK: The end

    private func malformed(_ context: ChannelHandlerContext, _ error: Error) {
        if let error = error as? TransportError { return finish(context, .transportClosed(error)) }
        logger.error("closing the connection: malformed usbredir from the VM: \(error)")
        finish(context, .protocolError("\(error)"))
    }

    private func finish(_ context: ChannelHandlerContext, _ end: SessionEnd) {
        if decided == nil { decided = end }
        context.close(promise: nil)
    }

    /// Completes `ended` once the channel is gone and the engine's drain
    /// (which may still be using this connection) has returned.
    private func endIfDone(_ context: ChannelHandlerContext) {
        guard inactive, !draining else { return }
        if let decided { return ended.succeed(decided) }
        let rejected = engine.assumeIsolated { $0.rejected }
        closeReason.whenSuccess { [ended] reason in
            ended.succeed(rejected ? .rejectedByFilter : .transportClosed(reason))
        }
    }
}
