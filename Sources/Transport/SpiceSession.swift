import Common
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Where and how to reach a SPICE server.
public struct SpiceEndpointConfiguration: Sendable {
    public var server: SpiceServerAddress
    public var password: String
    /// TLS applies to TCP servers only (QEMU serves a unix socket in clear).
    public var tls: TLSSettings?

    public init(server: SpiceServerAddress, password: String = "", tls: TLSSettings? = nil) {
        self.server = server
        self.password = password
        self.tls = tls
    }

    public init(address: HostPort, password: String = "", tls: TLSSettings? = nil) {
        self.init(server: .tcp(address), password: password, tls: tls)
    }
}

/// One SPICE client session with a VM: ONE main channel, under which all
/// usbredir channels of this process link (QEMU drops an earlier client when
/// a second session connects, so two sessions would fight each other).
public final class SpiceSession: Sendable {
    public let configuration: SpiceEndpointConfiguration
    public let sessionID: UInt32
    /// usbredir channel ids the VM offers, ascending.
    public let usbredirChannelIDs: [UInt8]
    private let mainChannel: Channel
    private let closed: EventLoopPromise<TransportError>
    private let inUse = NIOLockedValueBox<Set<UInt8>>([])
    private let closedLocally = NIOLockedValueBox(false)
    private let stats = SpiceStatisticsBox(SpiceStatistics())

    public var statistics: SpiceStatistics { stats.withLockedValue { $0 } }
    private let logger: Logger

    private init(configuration: SpiceEndpointConfiguration, sessionID: UInt32, channels: [UInt8],
                 mainChannel: Channel, closed: EventLoopPromise<TransportError>, logger: Logger) {
        self.configuration = configuration
        self.sessionID = sessionID
        self.usbredirChannelIDs = channels
        self.mainChannel = mainChannel
        self.closed = closed
        self.logger = logger
    }

    /// Links the main channel and learns the session id and channel list.
    public static func connect(_ configuration: SpiceEndpointConfiguration, logger: Logger) async throws -> SpiceSession {
        let channel = try await TCPConnector.connect(to: configuration.server, tls: configuration.tls)
        let closed = channel.channel.eventLoop.makePromise(of: TransportError.self)
        let ready = channel.channel.eventLoop.makePromise(of: (UInt32, [UInt8]).self)
        Task {
            let reason = await MainChannelLoop(configuration: configuration, logger: logger)
                .run(channel, ready: ready)
            ready.fail(reason)      // no-op once it succeeded
            closed.succeed(reason)
        }
        // The handshake has a deadline, and a cancelled caller closes the
        // connection (a future alone would wait for ever on a silent server).
        let deadline = channel.channel.eventLoop.scheduleTask(in: Spice.handshakeTimeout) {
            ready.fail(TransportError.unreachable("no SPICE handshake within \(Spice.handshakeTimeout.nanoseconds / 1_000_000_000) s"))
            channel.channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        let (sessionID, channels) = try await withTaskCancellationHandler {
            try await ready.futureResult.get()
        } onCancel: {
            channel.channel.close(promise: nil)
        }
        logger.debug("SPICE session linked", metadata: [
            "endpoint": "\(configuration.server)", "session": "\(sessionID)", "usbredir-channels": "\(channels)",
        ])
        return SpiceSession(configuration: configuration, sessionID: sessionID, channels: channels,
                            mainChannel: channel.channel, closed: closed, logger: logger)
    }

    /// Ends the session; every usbredir channel of it closes too.
    public func close() {
        closedLocally.withLockedValue { $0 = true }
        mainChannel.close(promise: nil)
    }

    /// Waits until the main channel has closed, and says why.
    public func closeReason() async -> TransportError {
        let reason = (try? await closed.futureResult.get()) ?? .closedByPeer
        return closedLocally.withLockedValue { $0 } ? .closedLocally : reason
    }

    public var isClosed: Bool { !mainChannel.isActive }

    /// Channel ids currently used by this process.
    public var channelsInUse: Set<UInt8> { inUse.withLockedValue { $0 } }

    /// Reserves channel `id` for this process. Which assignment gets which
    /// channel is decided above (the Reconciler's channel plan); this only
    /// refuses an id the VM lacks or one already linked.
    func reserveChannel(_ id: UInt8) throws -> UInt8 {
        try inUse.withLockedValue { used in
            guard usbredirChannelIDs.contains(id) else {
                throw TransportError.noSuchChannel(id, available: usbredirChannelIDs)
            }
            guard used.insert(id).inserted else { throw TransportError.channelInUse(id) }
            return id
        }
    }

    func releaseChannel(_ id: UInt8) {
        _ = inUse.withLockedValue { $0.remove(id) }
    }

    /// Links usbredir channel `id` and runs `body` with it for as long as the
    /// body runs; the channel closes after. The connection lives on
    /// `eventLoop` (nil: one of the singleton group's).
    public func withUSBRedirChannel<R: Sendable>(
        _ id: UInt8, eventLoop: EventLoop? = nil,
        _ body: (_ connection: USBRedirConnection, _ channelID: UInt8) async throws -> R
    ) async throws -> R {
        _ = try reserveChannel(id)
        defer { releaseChannel(id) }
        let link = SpiceLink(connectionID: sessionID, channelType: .usbredir, channelID: id,
                             channelCaps: [1 << UInt32(Spice.spicevmcCapLZ4)], password: configuration.password)
        let peer = "spice \(configuration.server) channel \(id)"
        let peerCloseReason = PeerCloseReason { [self] in await reasonAfterChannelClosed() }
        let (stats, logger) = (self.stats, self.logger)
        let (channel, linked, channelCloseReason) = try await TCPConnector.connect(
            to: configuration.server, tls: configuration.tls, eventLoop: eventLoop
        ) { channel in
            let linked = channel.eventLoop.makePromise(of: SpiceLink.Result.self)
            let closeReason = channel.eventLoop.makePromise(of: TransportError.self)
            let handler = SpiceLinkHandler(link: link, linked: linked) { context, result in
                // The usbredir phase: the SPICE handler, then the gate the session's handler follows.
                let gate = USBRedirSessionGate(eventLoop: context.eventLoop, peerCloseReason: peerCloseReason)
                closeReason.completeWith(gate.closeReason)
                try context.pipeline.syncOperations.addHandlers([
                    SpiceVMCHandler(miniHeader: result.miniHeader, lz4: result.serverHasChannelCap(Spice.spicevmcCapLZ4),
                                    statistics: stats, logger: logger),
                    gate,
                ], position: .after(context.handler))
            }
            // A link that fails never installs the gate.
            linked.futureResult.whenFailure { closeReason.fail($0) }
            do {
                try channel.pipeline.syncOperations.addHandler(handler)
            } catch {
                linked.fail(error)
                throw error
            }
            return (channel, linked.futureResult, closeReason.futureResult)
        }
        // The link (not the channel's life) has a deadline; a cancelled
        // caller closes the connection.
        let deadline = channel.eventLoop.scheduleTask(in: Spice.handshakeTimeout) {
            channel.close(promise: nil)
        }
        do {
            _ = try await withTaskCancellationHandler {
                try await linked.get()
            } onCancel: {
                channel.close(promise: nil)
            }
            deadline.cancel()
        } catch {
            deadline.cancel()
            channel.close(promise: nil)
            if case TransportError.closedByPeer = error {
                throw isClosed ? await closeReason()
                    : TransportError.linkRefused(code: 0, "server closed the link of usbredir channel \(id)")
            }
            throw error.asTransportError
        }
        let connection = USBRedirConnection(
            channel: channel,
            closeReason: channelCloseReason.recover { _ in .closedByPeer },
            peerDescription: peer, peerCloseReason: peerCloseReason)
        return try await connection.runThenClose { try await body($0, id) }
    }

    /// A usbredir channel closed: if the main channel closes with it (QEMU
    /// closes them together), its reason wins; else the VM closed just this one.
    private func reasonAfterChannelClosed() async -> TransportError {
        // spice-server closes the main channel asynchronously: on a loaded
        // host it can follow the usbredir channel by more than a second.
        let deadline = NIODeadline.now() + .seconds(3)
        while NIODeadline.now() < deadline {
            if isClosed { return await closeReason() }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        return .closedByPeer
    }
}

/// Counters of one SPICE session, for tests and status.
public struct SpiceStatistics: Sendable {
    public var messagesIn = 0
    public var messagesOut = 0
    public var compressedMessagesIn = 0
    public var compressedMessagesOut = 0
    /// Large messages LZ4 was tried on (it is skipped while it does not pay).
    public var compressionAttempts = 0
}

typealias SpiceStatisticsBox = NIOLockedValueBox<SpiceStatistics>
