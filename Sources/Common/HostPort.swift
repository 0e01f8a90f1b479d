/// `host:port` of an endpoint, IPv6 hosts written `[::1]:5930` (architecture.md).
/// One type from the profile (which parses it, with diagnostics) down to the
/// transport (which connects to it or listens on it).
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public static let ports = 1...65535

    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
