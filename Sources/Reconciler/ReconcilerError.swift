/// Why the reconciler could not start a connection, for reasons of the
/// profile or the machine rather than the network: retrying does not help
/// until the profile changes or SIGHUP.
public enum ReconcilerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An unset password variable, an unreadable password file.
    case password(endpoint: String, String)

    public var description: String {
        switch self {
        case .password(let endpoint, let why): "endpoint '\(endpoint)': \(why)"
        }
    }
}
