/// A domain's state as libvirt reports it (virDomainGetState), plus
/// "missing": a transient domain that was destroyed no longer exists.
public enum DomainState: Sendable, Equatable, CustomStringConvertible {
    case running, paused, shutOff, shuttingDown, crashed, suspended, missing, other(Int32)

    init(_ raw: Int32) {
        switch raw {
        case 1, 2: self = .running          // running, blocked
        case 3: self = .paused
        case 4: self = .shuttingDown
        case 5: self = .shutOff
        case 6: self = .crashed
        case 7: self = .suspended
        default: self = .other(raw)
        }
    }

    /// As in `domain lab-vm-a is shut off`.
    public var description: String {
        switch self {
        case .running: "running"
        case .paused: "paused"
        case .shutOff: "shut off"
        case .shuttingDown: "shutting down"
        case .crashed: "crashed"
        case .suspended: "suspended by the guest"
        case .missing: "not defined"
        case .other(let raw): "in state \(raw)"
        }
    }
}

/// A lifecycle event of one domain (virConnectDomainEventRegisterAny).
public struct DomainEvent: Sendable, Equatable {
    public var uri: String
    public var domain: String
    /// VIR_DOMAIN_EVENT_*: 2 started, 4 resumed, 5 stopped, ...
    public var kind: Int32

    public var isStart: Bool { kind == 2 || kind == 4 }
}

/// What resolving a domain found.
public struct ResolvedDomain: Sendable, Equatable {
    public var name: String
    public var uri: String
    public var state: DomainState
    /// nil: the domain has no SPICE graphics.
    public var graphics: SpiceGraphics?
    public var usbredirChannels: Int
}

public enum LibvirtError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The URI could not be opened (no daemon, no permission).
    case unreachable(uri: String, String)
    /// A call on an open connection failed.
    case failed(String)
    /// libvirt.so.0 could not be loaded (libvirt0 not installed); the
    /// message says so and how to fix it.
    case libraryMissing(String)

    public var description: String {
        switch self {
        case .unreachable(let uri, let message): "libvirt at \(uri) is not reachable: \(message)"
        case .failed(let message): "libvirt: \(message)"
        case .libraryMissing(let message): message
        }
    }
}
