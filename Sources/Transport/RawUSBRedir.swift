import Common
import NIOCore
import NIOPosix

/// Raw usbredir over TCP (QEMU `-chardev socket` + `-device usb-redir`):
/// the same bytes as over SPICE, without any framing.
public enum RawUSBRedir {
    /// Connects to a QEMU chardev socket server and runs `body` while
    /// connected, on `eventLoop` (nil: one of the singleton group's).
    public static func withConnection<R: Sendable>(
        to address: HostPort, eventLoop: EventLoop? = nil, _ body: (USBRedirConnection) async throws -> R
    ) async throws -> R {
        let connection = try await TCPConnector.connect(to: address, eventLoop: eventLoop) { channel in
            try makeConnection(channel, peer: "usbredir \(address)")
        }
        return try await connection.runThenClose(body)
    }

    /// Adds the raw pipeline (on the channel's loop, before it is active).
    static func makeConnection(_ channel: Channel, peer: String) throws -> USBRedirConnection {
        let gate = USBRedirSessionGate(eventLoop: channel.eventLoop, peerCloseReason: .closedByPeer)
        try channel.pipeline.syncOperations.addHandlers([RawUSBRedirHandler(), gate])
        return USBRedirConnection(channel: channel, closeReason: gate.closeReason, peerDescription: peer,
                                  peerCloseReason: .closedByPeer)
    }
}

/// The raw usbredir pipeline's handler: inbound bytes pass as they are;
/// an outbound packet's parts are written as they are (the promise is the
/// last part's).
final class RawUSBRedirHandler: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = OutgoingPacket
    typealias OutboundOut = ByteBuffer

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let packet = unwrapOutboundIn(data)
        guard let last = packet.parts.last else {
            context.write(wrapOutboundOut(ByteBuffer()), promise: promise)
            return
        }
        for part in packet.parts.dropLast() { context.write(wrapOutboundOut(part), promise: nil) }
        context.write(wrapOutboundOut(last), promise: promise)
    }
}

/// Listens for QEMU connecting to us; serves one peer at a time, each anew.
public final class RawUSBRedirListener: Sendable {
    private let server: NIOAsyncChannel<USBRedirConnection, Never>
    public let localAddress: HostPort

    private init(server: NIOAsyncChannel<USBRedirConnection, Never>, localAddress: HostPort) {
        self.server = server
        self.localAddress = localAddress
    }

    /// Listens on `address`; accepted connections live on `eventLoop` (nil:
    /// the singleton group's loops).
    public static func bind(_ address: HostPort, eventLoop: EventLoop? = nil) async throws -> RawUSBRedirListener {
        do {
            let group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
            let server = try await ServerBootstrap(group: group, childGroup: eventLoop ?? group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .bind(host: address.host, port: address.port) { child in
                    child.eventLoop.makeCompletedFuture {
                        try TCPLiveness.apply(to: child)
                        try TCPConnector.sizeReads(of: child)
                        let peer = child.remoteAddress.map { "\($0)" } ?? "peer"
                        let local = HostPort(host: address.host, port: child.localAddress?.port ?? address.port)
                        return try RawUSBRedir.makeConnection(child, peer: "usbredir listen \(local) <- \(peer)")
                    }
                }
            let port = server.channel.localAddress?.port ?? address.port
            return RawUSBRedirListener(server: server, localAddress: HostPort(host: address.host, port: port))
        } catch {
            throw TransportError.unreachable("cannot listen on \(address): \(error)")
        }
    }

    /// Accepts peers one after another and runs `body` for each; a peer that
    /// connects while another is served waits in the accept queue. With
    /// `allowing` not empty, a peer from another address is closed at once
    /// and reported to `refused`.
    public func serve(allowing allowed: [String] = [], refused: (String) -> Void = { _ in },
                      _ body: (USBRedirConnection) async throws -> Void) async throws {
        try await server.executeThenClose { inbound in
            for try await connection in inbound {
                let channel = connection.channel
                let peer = channel.remoteAddress.map { "\($0)" } ?? "peer"
                if !allowed.isEmpty, !allowed.contains(channel.remoteAddress?.ipAddress ?? "") {
                    try? await channel.close()
                    refused(peer)
                    continue
                }
                try await connection.runThenClose(body)
            }
        }
    }

    public func close() {
        server.channel.close(promise: nil)
    }
}
