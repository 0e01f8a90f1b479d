/// Why a connection could not be made or ended. The layers above decide from
/// the case: retry with backoff, report and stop, or report and wait.
public enum TransportError: Error, Sendable, Equatable {
    /// TCP connect failed (refused, unreachable, timed out).
    case unreachable(String)
    /// The peer is not speaking SPICE (bad magic) or an unsupported version.
    case notSpice(String)
    /// The SPICE server rejected the password.
    case wrongPassword
    /// The SPICE server refused the link for another reason.
    case linkRefused(code: UInt32, String)
    /// The requested usbredir channel does not exist on the VM.
    case noSuchChannel(UInt8, available: [UInt8])
    /// This process has already linked that usbredir channel.
    case channelInUse(UInt8)
    /// Every usbredir channel of the VM is taken (or it has none).
    case noFreeChannel(available: [UInt8])
    /// Another SPICE client took over the VM; QEMU dropped us.
    case displaced
    /// The SPICE server dropped us and no other client took over (a
    /// `set_password ... disconnect`, a restart): link again.
    case droppedByServer
    /// The peer (VM) closed the connection or went away.
    case closedByPeer
    /// We closed it ourselves.
    case closedLocally
    /// A malformed frame from the peer.
    case protocolViolation(String)
    /// TLS handshake or certificate verification failed.
    case tls(String)
    /// Password file / env unusable and similar local problems.
    case configuration(String)
}

extension TransportError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .unreachable(let why): "endpoint unreachable: \(why)"
        case .notSpice(let why): "peer is not a SPICE server: \(why)"
        case .wrongPassword: "SPICE server rejected the password (permission denied)"
        case .linkRefused(let code, let why): "SPICE link refused: \(why) (error \(code))"
        case .noSuchChannel(let id, let ids):
            "the VM has no usbredir channel \(id) (it has \(ids.isEmpty ? "none" : ids.map(String.init).joined(separator: ", ")))"
        case .channelInUse(let id): "usbredir channel \(id) is already in use"
        case .noFreeChannel(let ids):
            ids.isEmpty ? "the VM has no usbredir channel" : "all \(ids.count) usbredir channels of the VM are in use"
        case .displaced: "displaced by another client"
        case .droppedByServer: "the SPICE server dropped the connection (no other client took over)"
        case .closedByPeer: "connection closed by the VM"
        case .closedLocally: "connection closed by us"
        case .protocolViolation(let why): "protocol violation: \(why)"
        case .tls(let why): "TLS: \(why)"
        case .configuration(let why): why
        }
    }
}
