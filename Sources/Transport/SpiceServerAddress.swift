import Common

/// Where a SPICE server listens: a TCP address (`-spice port=`) or a unix
/// domain socket (`-spice unix=on,addr=PATH`, libvirt's
/// `<listen type='socket'>`). Everything above the socket (link, ticket,
/// channels, LZ4) is the same for both.
public enum SpiceServerAddress: Sendable, Hashable, CustomStringConvertible {
    case tcp(HostPort)
    case unix(String)

    /// `host:port`, or `unix:PATH` as a profile writes it.
    public var description: String {
        switch self {
        case .tcp(let address): "\(address)"
        case .unix(let path): "unix:\(path)"
        }
    }
}
