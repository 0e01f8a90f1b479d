import Common
import NIOCore
import NIOPosix

/// Raw usbredir over TCP (QEMU `-chardev socket` + `-device usb-redir`):
/// the same bytes as over SPICE, without any framing.
public enum RawUSBRedir {
    /// Connects to a QEMU chardev socket server and runs `body` while
    /// connected. `eventLoop`: the loop the connection lives on (the session's).
    public static func withConnection<R: Sendable>(
        to address: HostPort, eventLoop: (any EventLoop)? = nil, _ body: (USBRedirConnection) async throws -> R
    ) async throws -> R {
        let channel = try await TCPConnector.connect(to: address, eventLoop: eventLoop)
        return try await run(channel, peer: "usbredir \(address)", body)
    }

    static func run<R: Sendable>(
        _ channel: ByteChannel, peer: String, _ body: (USBRedirConnection) async throws -> R
    ) async throws -> R {
        try await channel.executeThenClose { inbound, _ in
            let connection = USBRedirConnection(
                reader: RawReader(inbound.makeAsyncIterator()),
                writer: RawWriter(channel: channel.channel, ordered: OrderedChannelWriter(channel: channel.channel)),
                peerDescription: peer)
            return try await body(connection)
        }
    }
}

/// Listens for QEMU connecting to us; serves one peer at a time, each anew.
public final class RawUSBRedirListener: Sendable {
    private let server: NIOAsyncChannel<ByteChannel, Never>
    public let localAddress: HostPort

    private init(server: NIOAsyncChannel<ByteChannel, Never>, localAddress: HostPort) {
        self.server = server
        self.localAddress = localAddress
    }

    /// `eventLoop`: the loop accepted connections live on (the session's).
    public static func bind(_ address: HostPort, eventLoop: (any EventLoop)? = nil) async throws -> RawUSBRedirListener {
        do {
            let loop = eventLoop ?? MultiThreadedEventLoopGroup.singleton.next()
            let server = try await ServerBootstrap(group: loop)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .bind(host: address.host, port: address.port) { child in
                    child.eventLoop.makeCompletedFuture {
                        try TCPLiveness.apply(to: child)
                        try TCPConnector.sizeReads(of: child)
                        return try ByteChannel(wrappingChannelSynchronously: child)
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
            for try await child in inbound {
                let peer = child.channel.remoteAddress.map { "\($0)" } ?? "peer"
                if !allowed.isEmpty, !allowed.contains(child.channel.remoteAddress?.ipAddress ?? "") {
                    try? await child.channel.close()
                    refused(peer)
                    continue
                }
                try await RawUSBRedir.run(child, peer: "usbredir listen \(localAddress) <- \(peer)", body)
            }
        }
    }

    public func close() {
        server.channel.close(promise: nil)
    }
}

final class RawReader: USBRedirByteReader {
    private var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator

    init(_ iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator) {
        self.iterator = iterator
    }

    func read() async throws -> ByteBuffer? {
        do {
            return try await iterator.next()
        } catch {
            throw error.asTransportError
        }
    }
}

struct RawWriter: USBRedirByteWriter {
    let channel: Channel
    let ordered: OrderedChannelWriter

    func enqueue(_ packets: [OutgoingPacket], written: @escaping @Sendable (Bool) -> Void) {
        ordered.write(packets.flatMap(\.parts), written: written)
    }

    func close() { channel.close(promise: nil) }

    func whenClosed(_ callback: @escaping @Sendable () -> Void) { ordered.whenClosed(callback) }
}
