import Common
/// A profile (usbredir-profile(5); architecture.md, "Profiles (version 1)") as typed values. Everything
/// here has been validated by `ProfileLoader`; paths are absolute.
public struct Profile: Sendable, Hashable {
    public static let supportedVersion = 1

    public var version: Int
    /// Default level for everything the profile runs (`log:`, default info).
    public var log: LogLevel
    public var endpoints: [String: Endpoint]
    /// Endpoint names in file order (the dictionary has no order).
    public var endpointOrder: [String]
    /// The global `devices:` followed by those of the selected `hosts:` section.
    /// File order matters: a device goes to the first assignment it matches.
    public var devices: [Assignment]
    /// Absolute path of the profile file.
    public var sourcePath: String
    /// The `hosts:` key whose devices were appended, if any.
    public var selectedHost: String?
    /// `metrics:`: where apply serves Prometheus text exposition (off when nil).
    public var metrics: HostPort?

    public init(version: Int = Profile.supportedVersion, log: LogLevel = .info, endpoints: [Endpoint] = [],
                devices: [Assignment] = [], sourcePath: String, selectedHost: String? = nil) {
        self.version = version
        self.log = log
        self.endpoints = Dictionary(endpoints.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        self.endpointOrder = endpoints.map(\.name)
        self.devices = devices
        self.sourcePath = sourcePath
        self.selectedHost = selectedHost
    }

    /// The profile's name: its file name without the extension
    /// (`lab.yaml` -> `lab`); it names the status socket.
    public var name: String { Self.name(forPath: sourcePath) }

    public static func name(forPath path: String) -> String {
        let file = path.split(separator: "/").last.map(String.init) ?? path
        guard let dot = file.lastIndex(of: "."), dot != file.startIndex else { return file }
        return String(file[..<dot])
    }

    /// Endpoints in file order.
    public var orderedEndpoints: [Endpoint] { endpointOrder.compactMap { endpoints[$0] } }

    /// The level an assignment logs at: its own `log:`, else the profile's.
    public func logLevel(for assignment: Assignment) -> LogLevel { assignment.log ?? log }

    /// Pairs of assignments a single device could match (the earlier one
    /// first). Identical rules are rejected by the loader; these are the
    /// allowed overlaps, resolved at run time by file order, that plan and
    /// status show as conflicts (architecture.md).
    public var overlaps: [(Assignment, Assignment)] {
        let rules = devices.compactMap { device -> (Assignment, MatchRule)? in
            if case .match(let rule) = device.source { return (device, rule) }
            return nil
        }
        var pairs: [(Assignment, Assignment)] = []
        for (index, (first, firstRule)) in rules.enumerated() {
            for (second, secondRule) in rules[(index + 1)...] where firstRule.overlaps(secondRule) {
                pairs.append((first, second))
            }
        }
        return pairs
    }
}

/// Same as `profile.overlaps`.
public func overlaps(_ profile: Profile) -> [(Assignment, Assignment)] { profile.overlaps }

/// Same names and order as swift-log's `Logger.Level`, so the CLI can map
/// one to the other by raw value.
public enum LogLevel: String, Sendable, Hashable, CaseIterable, Comparable {
    case trace, debug, info, notice, warning, error, critical

    public static func < (a: Self, b: Self) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// Where a secret comes from; the profile never holds the secret itself.
public enum PasswordSource: Sendable, Hashable {
    case file(String)   // absolute path
    case env(String)    // environment variable name
}

public struct Endpoint: Sendable {
    public enum Kind: Sendable, Hashable {
        case spice(HostPort)
        /// SPICE on a unix domain socket (`spice: unix:PATH`, absolute path).
        case spiceUnix(String)
        case spiceTLS(HostPort, caFile: String?, hostSubject: String?)
        /// Raw usbredir; we connect (QEMU `-chardev socket,server=on`).
        case usbredir(HostPort)
        /// Raw usbredir; the peer connects to us.
        case listen(HostPort)
        /// A libvirt domain by name: its SPICE graphics, resolved when connecting.
        case libvirt(domain: String, uri: String)
    }

    /// `uri:` when a libvirt endpoint gives none.
    public static let defaultLibvirtURI = "qemu:///system"

    public var name: String
    public var kind: Kind
    public var password: PasswordSource?
    /// `allow:` of a listen endpoint: the peer addresses it accepts (empty: any).
    public var allowedPeers: [String]
    /// The endpoint's key in `endpoints:`.
    public var location: SourcePosition

    public init(name: String, kind: Kind, password: PasswordSource? = nil, allowedPeers: [String] = [],
                location: SourcePosition) {
        self.name = name
        self.kind = kind
        self.password = password
        self.allowedPeers = allowedPeers
        self.location = location
    }

    /// The TCP address, for the kinds that have one.
    public var hostPort: HostPort? {
        switch kind {
        case .spice(let a), .spiceTLS(let a, _, _), .usbredir(let a), .listen(let a): return a
        case .spiceUnix, .libvirt: return nil
        }
    }

    /// Where it is, as the profile writes it: `host:port` or `unix:PATH`.
    public var addressDescription: String {
        if case .spiceUnix(let path) = kind { return "unix:\(path)" }
        if case .libvirt(let domain, let uri) = kind { return "domain \(domain) on \(uri)" }
        return hostPort.map { "\($0)" } ?? ""
    }

    /// SPICE endpoints multiplex channels; raw ones carry exactly one assignment.
    public var isSpice: Bool {
        switch kind {
        case .spice, .spiceUnix, .spiceTLS, .libvirt: return true
        case .usbredir, .listen: return false
        }
    }

    /// The profile key that gives the kind: spice, spice-tls, usbredir or listen.
    public var kindName: String {
        switch kind {
        case .spice, .spiceUnix: return "spice"
        case .spiceTLS: return "spice-tls"
        case .usbredir: return "usbredir"
        case .listen: return "listen"
        case .libvirt: return "libvirt"
        }
    }
}

/// Equality ignores `location`: a reconcile compares what an endpoint means,
/// so a line inserted above it does not count as a change.
extension Endpoint: Hashable {
    public static func == (a: Self, b: Self) -> Bool {
        a.name == b.name && a.kind == b.kind && a.password == b.password && a.allowedPeers == b.allowedPeers
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(kind)
        hasher.combine(password)
        hasher.combine(allowedPeers)
    }
}

/// One device bound to one endpoint (an entry of `devices:`).
public struct Assignment: Sendable {
    public enum Source: Sendable, Hashable {
        case match(MatchRule)
        case virtual(VirtualDevice)
    }

    public var name: String
    /// Name of the endpoint (`to:`); the loader checked that it exists.
    public var endpoint: String
    public var log: LogLevel?
    /// SPICE usbredir channel id; nil takes the lowest free one.
    public var channel: UInt8?
    public var source: Source
    /// `take-from-host`: a matched device the host itself uses (a mounted
    /// file system on it) is taken anyway; without it, it is left alone.
    public var takeFromHost: Bool
    /// Where the entry starts (its first key).
    public var location: SourcePosition
    /// The `hosts:` section it came from; nil for the global list.
    public var hostSection: String?

    public init(name: String, endpoint: String, log: LogLevel? = nil, channel: UInt8? = nil, source: Source,
                takeFromHost: Bool = false, location: SourcePosition, hostSection: String? = nil) {
        self.name = name
        self.endpoint = endpoint
        self.log = log
        self.channel = channel
        self.source = source
        self.takeFromHost = takeFromHost
        self.location = location
        self.hostSection = hostSection
    }
}

/// Equality ignores where the entry is written (location, host section): an
/// unchanged assignment must not be restarted because lines moved.
extension Assignment: Hashable {
    public static func == (a: Self, b: Self) -> Bool {
        a.name == b.name && a.endpoint == b.endpoint && a.log == b.log && a.channel == b.channel && a.source == b.source
            && a.takeFromHost == b.takeFromHost
    }

    /// The same entry with no log level of its own: two entries equal this
    /// way differ at most in `log:`, which a running session takes live.
    public var ignoringLog: Assignment {
        var a = self
        a.log = nil
        return a
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(endpoint)
        hasher.combine(log)
        hasher.combine(channel)
        hasher.combine(source)
        hasher.combine(takeFromHost)
    }
}

public struct VirtualDevice: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case massStorage = "mass-storage"
        case sourceSink = "source-sink"
    }

    /// The USB speed a mass-storage stick announces. SuperSpeed lets a guest
    /// on xhci send 1 MiB SCSI commands (120 KiB at high speed), so a read
    /// costs fewer round trips; but QEMU attaches a usbredir device to an
    /// ehci or uhci port at the port's speed without adapting its ep0
    /// (bMaxPacketSize0 9), and the guest refuses it there: high by default.
    public enum Speed: String, Sendable, Hashable, CaseIterable {
        case high
        case `super`
    }

    public var kind: Kind
    /// Absolute path of the disk image (mass-storage only).
    public var image: String?
    public var readOnly: Bool
    public var speed: Speed
    /// A SuperSpeed stick also offers USB Attached SCSI (alternate setting 1,
    /// bulk streams): a guest on xhci then keeps many commands queued instead
    /// of one at a time.
    public var uas: Bool

    public init(kind: Kind, image: String? = nil, readOnly: Bool = false, speed: Speed = .high, uas: Bool = false) {
        self.kind = kind
        self.image = image
        self.readOnly = readOnly
        self.speed = speed
        self.uas = uas
    }
}
