/// Why the reconciler could not start a connection, for reasons of the
/// profile or the machine rather than the network: retrying does not help
/// until the profile changes or SIGHUP.
public enum ReconcilerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An unset password variable, an unreadable password file.
    case password(endpoint: String, String)
    /// A libvirt domain that cannot carry usbredir (no SPICE graphics, no
    /// spicevmc redirdev), or libvirt itself missing on this host
    /// (libvirt0 not installed): a lifecycle event or SIGHUP checks again.
    case domain(endpoint: String, String)

    public var description: String {
        switch self {
        case .password(let endpoint, let why), .domain(let endpoint, let why): "endpoint '\(endpoint)': \(why)"
        }
    }
}
