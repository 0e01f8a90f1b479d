import NIOCore
import NIOPosix

extension TCPConnector {
    /// Opens the connection a SPICE server address names.
    static func connect(to server: SpiceServerAddress, tls: TLSSettings? = nil,
                        eventLoop: (any EventLoop)? = nil) async throws -> ByteChannel {
        switch server {
        case .tcp(let address):
            return try await connect(to: address, tls: tls, eventLoop: eventLoop)
        case .unix(let path):
            // QEMU has no TLS on its unix socket; a caller asking for it has
            // a configuration the profile loader should have refused.
            if tls != nil { throw TransportError.configuration("TLS is not available on a unix socket (\(path))") }
            return try await connect(unixSocket: path, eventLoop: eventLoop)
        }
    }

    /// A unix domain socket connection: no TCP options (no Nagle, no
    /// keepalive there: a local peer that dies closes the socket).
    static func connect(unixSocket path: String, eventLoop: (any EventLoop)? = nil) async throws -> ByteChannel {
        let bootstrap = ClientBootstrap(group: eventLoop ?? MultiThreadedEventLoopGroup.singleton.next()).connectTimeout(connectTimeout)
        do {
            return try await bootstrap.connect(unixDomainSocketPath: path) { channel in
                channel.eventLoop.makeCompletedFuture { try ByteChannel(wrappingChannelSynchronously: channel) }
            }
        } catch {
            throw TransportError.unreachable("unix:\(path): \(error)")
        }
    }
}
