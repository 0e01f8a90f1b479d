import Common
import NIOCore
import NIOPosix
import NIOSSL

/// TLS settings for spice-tls endpoints. Verification is on by default.
public struct TLSSettings: Sendable {
    /// PEM file of the CA to trust; nil means the system trust store.
    public var caFile: String?
    /// `host-subject`: when set, the certificate's subject must match it
    /// instead of its name matching the host. The chain is verified either way.
    public var hostSubject: String?

    public init(caFile: String? = nil, hostSubject: String? = nil) {
        self.caFile = caFile
        self.hostSubject = hostSubject
    }
}

typealias ByteChannel = NIOAsyncChannel<ByteBuffer, ByteBuffer>

/// Opens TCP (optionally TLS) connections wrapped for async use.
enum TCPConnector {
    static let connectTimeout = TimeAmount.seconds(5)

    /// Reads grow to 1 MiB: a VM's bulk OUT data (64 KiB and more per
    /// packet, several in flight) then comes in one read rather than in
    /// 64 KiB pieces, each a turn of the session (NIO's default maximum).
    static let reads = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 16 * 1024, maximum: 1024 * 1024)

    /// Sets the read sizing on a channel from its initializer.
    static func sizeReads(of channel: Channel) throws {
        try channel.syncOptions?.setOption(.recvAllocator, value: reads)
    }

    static func connect(to address: HostPort, tls: TLSSettings? = nil) async throws -> ByteChannel {
        try await connect(to: address, tls: tls, eventLoop: nil) { try ByteChannel(wrappingChannelSynchronously: $0) }
    }

    /// Connects on `eventLoop` (nil: any of the singleton group's) and runs
    /// `initialize` on the new channel's loop before it becomes active, after
    /// TCP keepalive and TLS are set up: it adds the handlers that follow.
    static func connect<Output: Sendable>(
        to address: HostPort, tls: TLSSettings? = nil, eventLoop: EventLoop?,
        _ initialize: @escaping @Sendable (Channel) throws -> Output
    ) async throws -> Output {
        let sslContext = try tls.map(makeContext)
        let subject = try tls?.hostSubject.map { text in
            guard let s = HostSubject(text) else { throw TransportError.configuration("host-subject '\(text)' is not KEY=VALUE,...") }
            return s
        }
        let bootstrap = ClientBootstrap(group: eventLoop ?? MultiThreadedEventLoopGroup.singleton.next())
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
        do {
            return try await bootstrap.connect(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try TCPLiveness.apply(to: channel)
                    try sizeReads(of: channel)
                    if let sslContext {
                        let hostname = isIPAddress(address.host) ? nil : address.host
                        let handler = try subject.map {
                            try NIOSSLClientHandler._makeSSLClientHandler(
                                context: sslContext, serverHostname: hostname,
                                additionalPeerCertificateVerificationCallback: $0.verifier())
                        } ?? NIOSSLClientHandler(context: sslContext, serverHostname: hostname)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    return try initialize(channel)
                }
            }
        } catch {
            throw TransportError.unreachable("\(address): \(error)")
        }
    }

    private static func makeContext(_ settings: TLSSettings) throws -> NIOSSLContext {
        var config = TLSConfiguration.makeClientConfiguration()
        config.minimumTLSVersion = .tlsv12
        if let caFile = settings.caFile {
            config.trustRoots = .file(caFile)
        }
        config.certificateVerification = settings.hostSubject == nil ? .fullVerification : .noHostnameVerification
        do {
            return try NIOSSLContext(configuration: config)
        } catch {
            throw TransportError.tls("cannot load CA file \(settings.caFile ?? "(system)"): \(error)")
        }
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

extension Error {
    /// Turns NIOSSL's handshake failures into a TransportError a user can read.
    var asTransportError: TransportError {
        if let t = self as? TransportError { return t }
        if let ssl = self as? NIOSSLError {
            if case .handshakeFailed = ssl, "\(ssl)".contains("does not match host-subject") {
                return .tls("\(ssl)")
            }
            let text = "\(ssl)"
            return text.contains("CERTIFICATE_VERIFY_FAILED")
                ? .tls("certificate verification failed (is ca-file the CA that signed the server?): \(text)")
                : .tls("handshake failed: \(text)")
        }
        if self is BoringSSLError {
            return .tls("certificate verification failed: \(self)")
        }
        if let io = self as? IOError { return .unreachable("\(io)") }
        if self is ChannelError { return .closedByPeer }
        return .protocolViolation("\(self)")
    }
}
