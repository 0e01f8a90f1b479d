import Common
import Devices
import Profile

/// The one rule that decides which present physical device each assignment
/// gets; `apply` binds by it and `plan` shows it, so the two cannot differ.
/// A device already bound stays with its assignment while both remain; the
/// others go, in file order, to the first assignment whose rule matches.
public enum DeviceChoice {
    /// Assignment name -> device, for the match assignments of `profile`.
    /// `bound` is what runs now (assignment name -> its device).
    /// `hostUse` (port path -> why, `HostUse.reasons`): devices the host
    /// itself uses go only to an assignment that says `take-from-host`.
    public static func desired(_ profile: Profile, present: [USBDeviceInfo], bound: [String: USBDeviceInfo],
                               hostUse: [String: String] = [:]) -> [String: USBDeviceInfo] {
        let presentKeys = Set(present.map(\.key))
        var chosen: [String: USBDeviceInfo] = [:]
        var taken: Set<String> = []
        for assignment in profile.devices {
            guard case .match = assignment.source, let device = bound[assignment.name],
                  presentKeys.contains(device.key), taken.insert(device.key).inserted else { continue }
            chosen[assignment.name] = device
        }
        for assignment in profile.devices where chosen[assignment.name] == nil {
            guard case .match(let rule) = assignment.source,
                  let device = present.first(where: {
                      !taken.contains($0.key) && matches(rule, $0) && (assignment.takeFromHost || hostUse[$0.port] == nil)
                  }) else { continue }
            taken.insert(device.key)
            chosen[assignment.name] = device
        }
        return chosen
    }

    /// The present devices whose use by the host matters: those a match
    /// assignment without `take-from-host` would take. Only these are asked
    /// of `HostUse`, so a profile for sticks does not scan /proc every pass
    /// for the keyboard it will never take.
    public static func guarded(_ profile: Profile, present: [USBDeviceInfo]) -> [USBDeviceInfo] {
        let rules = profile.devices.compactMap { a -> MatchRule? in
            if case .match(let rule) = a.source, !a.takeFromHost { rule } else { nil }
        }
        return present.filter { d in rules.contains { matches($0, d) } }
    }

    static func matches(_ rule: MatchRule, _ d: USBDeviceInfo) -> Bool {
        rule.matches(vendor: d.vendorID, product: d.productID, serial: d.serial, port: d.port)
    }
}

/// Two assignments whose rules overlap (architecture.md: allowed, resolved by
/// file order), with the present devices both would match.
public struct MatchConflict: Codable, Sendable, Equatable {
    public var first: String
    public var second: String
    /// Present devices both match; the first assignment gets them.
    public var devices: [String]

    public static func all(in profile: Profile, present: [USBDeviceInfo]) -> [MatchConflict] {
        profile.overlaps.map { pair in
            MatchConflict(first: pair.0.name, second: pair.1.name, devices: present.filter { d in
                [pair.0, pair.1].allSatisfy {
                    if case .match(let r) = $0.source { DeviceChoice.matches(r, d) } else { false }
                }
            }.map(\.label))
        }
    }

    /// One line for people: `a and b overlap; 0525:a4a5@1-3 go to a`.
    public var text: String {
        "conflict: \(first) and \(second) overlap" + (devices.isEmpty ? "" : "; \(devices.joined(separator: ", ")) go to \(first)")
    }
}

/// A present device an assignment matches and leaves alone because the host
/// uses it (a mounted file system on it, a node of it held open): plan and
/// status say so.
public struct HostHeldDevice: Codable, Sendable, Equatable {
    public var assignment: String
    public var device: String
    /// "/dev/sdb1 mounted on /mnt", "/dev/input/event5 held open by Xorg (pid 812)".
    public var reason: String

    public init(assignment: String, device: String, reason: String) {
        self.assignment = assignment
        self.device = device
        self.reason = reason
    }

    /// For each assignment that got no device, the matching devices the host holds.
    public static func all(in profile: Profile, present: [USBDeviceInfo], hostUse: [String: String],
                           chosen: [String: USBDeviceInfo]) -> [HostHeldDevice] {
        let given = Set(chosen.values.map(\.key))
        return profile.devices.flatMap { a -> [HostHeldDevice] in
            guard case .match(let rule) = a.source, chosen[a.name] == nil, !a.takeFromHost else { return [] }
            return present.compactMap { d in
                guard !given.contains(d.key), DeviceChoice.matches(rule, d), let why = hostUse[d.port] else { return nil }
                return HostHeldDevice(assignment: a.name, device: d.label, reason: why)
            }
        }
    }

    /// One line for people.
    public var text: String {
        "left to the host: \(device) (matched by \(assignment)) is in use by the host: \(reason); "
            + "take-from-host: true takes it anyway"
    }
}

extension Profile {
    /// A digest of what one assignment's session runs: its entry, its
    /// effective log level and its endpoint. Equal digests mean `apply` has
    /// nothing to change for it.
    func desiredDigest(of assignment: Assignment) -> String {
        // The fields equality looks at (not where the entry is written), so
        // moving lines is no change, as in `Reconciler.reconcile`.
        let endpoint = endpoints[assignment.endpoint]
        var fields: [String] = [
            assignment.name, assignment.endpoint, logLevel(for: assignment).rawValue,
            assignment.channel.map { "\($0)" } ?? "auto", String(reflecting: assignment.source),
            endpoint.map { String(reflecting: $0.kind) } ?? "", endpoint.map { String(reflecting: $0.password) } ?? "",
            endpoint.map { $0.allowedPeers.joined(separator: ",") } ?? "",
        ]
        if assignment.takeFromHost { fields.append("take-from-host") }
        return Hex.padded(FNV1a.hash(fields.joined(separator: "\u{1f}").utf8), digits: 16)
    }
}

extension USBDeviceInfo {
    /// `VVVV:PPPP@PORT`, as status shows a physical device.
    public var label: String { "\(Hex.id(vendorID)):\(Hex.id(productID))@\(port)" }
    /// Identity of a present device for binding: where it is plugged, and
    /// its address (a replugged device is a new one).
    var key: String { "\(bus)-\(port)-\(address)" }
}
