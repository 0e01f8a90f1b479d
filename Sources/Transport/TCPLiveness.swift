#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// How a dead peer (a partitioned host, a VM host that lost power) is
/// noticed, since neither usbredir nor SPICE lets the client ping: TCP
/// keepalive probes after `idleSeconds` of silence, every `intervalSeconds`,
/// `probes` lost ones ending the connection (about 25 s); and data left
/// unacknowledged for `userTimeoutMilliseconds` ends it too. The session
/// then sees the connection close and reconnects with backoff.
public enum TCPLiveness {
    public static let idleSeconds: Int32 = 10
    public static let intervalSeconds: Int32 = 5
    public static let probes: Int32 = 3
    public static let userTimeoutMilliseconds: Int32 = 30_000

    /// The socket options, for bootstraps and accepted channels alike.
    static let options: [(ChannelOptions.Types.SocketOption, Int32)] = [
        (.socketOption(.so_keepalive), 1),
        (.socket(SocketOptionLevel(IPPROTO_TCP), SocketOptionName(TCP_KEEPIDLE)), idleSeconds),
        (.socket(SocketOptionLevel(IPPROTO_TCP), SocketOptionName(TCP_KEEPINTVL)), intervalSeconds),
        (.socket(SocketOptionLevel(IPPROTO_TCP), SocketOptionName(TCP_KEEPCNT)), probes),
        (.socket(SocketOptionLevel(IPPROTO_TCP), SocketOptionName(TCP_USER_TIMEOUT)), userTimeoutMilliseconds),
    ]

    /// Sets them on a channel from its initializer (on its event loop).
    static func apply(to channel: Channel) throws {
        guard let sync = channel.syncOptions else { return }
        for (option, value) in options { try sync.setOption(option, value: SocketOptionValue(value)) }
    }
}
