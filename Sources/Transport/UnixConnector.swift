import NIOCore
import NIOPosix

extension TCPConnector {
    /// Opens the connection a SPICE server address names.
    static func connect(to server: SpiceServerAddress, tls: TLSSettings? = nil) async throws -> ByteChannel {
        try await connect(to: server, tls: tls, eventLoop: nil) { try ByteChannel(wrappingChannelSynchronously: $0) }
    }

    /// As `connect(to:tls:eventLoop:_:)` for a TCP address.
    static func connect<Output: Sendable>(
        to server: SpiceServerAddress, tls: TLSSettings? = nil, eventLoop: EventLoop?,
        _ initialize: @escaping @Sendable (Channel) throws -> Output
    ) async throws -> Output {
        switch server {
        case .tcp(let address):
            return try await connect(to: address, tls: tls, eventLoop: eventLoop, initialize)
        case .unix(let path):
            // QEMU has no TLS on its unix socket; a caller asking for it has
            // a configuration the profile loader should have refused.
            if tls != nil { throw TransportError.configuration("TLS is not available on a unix socket (\(path))") }
            return try await connect(unixSocket: path, eventLoop: eventLoop, initialize)
        }
    }

    /// A unix domain socket connection: no TCP options (no Nagle, no
    /// keepalive there: a local peer that dies closes the socket).
    static func connect<Output: Sendable>(
        unixSocket path: String, eventLoop: EventLoop?, _ initialize: @escaping @Sendable (Channel) throws -> Output
    ) async throws -> Output {
        let bootstrap = ClientBootstrap(group: eventLoop ?? MultiThreadedEventLoopGroup.singleton.next())
            .connectTimeout(connectTimeout)
        do {
            return try await bootstrap.connect(unixDomainSocketPath: path) { channel in
                channel.eventLoop.makeCompletedFuture { try initialize(channel) }
            }
        } catch {
            throw TransportError.unreachable("unix:\(path): \(error)")
        }
    }
}
