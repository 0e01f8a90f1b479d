import Common
import Devices
import Profile

/// What apply would do now: endpoints, each assignment with the device it
/// would get, sessions a running apply would drop, and match conflicts.
public struct Plan: Codable, Sendable {
    public struct EndpointEntry: Codable, Sendable {
        public var name: String
        public var kind: String
        public var address: String
        /// A libvirt endpoint's SPICE server now (host:port, unix:PATH), or
        /// why there is none ("domain lab-vm-a is shut off"); null otherwise.
        @NullWhenAbsent public var resolved: String? = nil
    }

    public enum Action: String, Codable, Sendable {
        /// Not running yet.
        case add
        /// Running, and its own desired state is unchanged.
        case keep
        /// Running, and its entry, effective log level or endpoint changed.
        case update
    }

    public struct AssignmentEntry: Codable, Sendable {
        public var name: String
        public var endpoint: String
        @NullWhenAbsent public var channel: Int?
        /// The device it would get now: `virtual:KIND`, `VVVV:PPPP@PORT`, or null (none present).
        @NullWhenAbsent public var device: String?
        public var action: Action
    }

    public var profile: String
    /// The `hosts:` section whose devices were added (`--host`, else this
    /// machine's hostname); null when none matched.
    @NullWhenAbsent public var host: String?
    /// A running apply already runs exactly this (nothing to add, update or remove).
    public var upToDate: Bool
    public var runningApply: Bool
    public var endpoints: [EndpointEntry]
    public var assignments: [AssignmentEntry]
    public var removals: [String]
    public var conflicts: [MatchConflict]
    /// Matching devices left alone because the host uses them.
    public var heldByHost: [HostHeldDevice]

    enum CodingKeys: String, CodingKey {
        case profile, host, endpoints, assignments, removals, conflicts
        case upToDate = "up_to_date", runningApply = "running_apply", heldByHost = "held_by_host"
    }

    /// `resolved`: `resolvedAddresses(p)`, for libvirt endpoints;
    /// `hostUse`: `HostUse.reasons(for:)` of the present devices (those
    /// `DeviceChoice.guarded` names are enough).
    public static func make(_ p: Profile, present: [USBDeviceInfo], running: StatusReport?,
                            resolved: [String: String] = [:], hostUse: [String: String] = [:]) -> Plan {
        let runningByName = Dictionary((running?.sessions ?? []).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let actions = Dictionary(uniqueKeysWithValues: p.devices.map { a -> (String, Action) in
            guard let session = runningByName[a.name] else { return (a.name, .add) }
            return (a.name, session.desiredDigest == p.desiredDigest(of: a) ? .keep : .update)
        })
        // A session apply keeps holds on to its device (see DeviceChoice).
        var bound: [String: USBDeviceInfo] = [:]
        for (name, action) in actions where action == .keep {
            if let label = runningByName[name]?.device, let d = present.first(where: { $0.label == label }) { bound[name] = d }
        }
        let chosen = DeviceChoice.desired(p, present: present, bound: bound, hostUse: hostUse)
        let assignments = p.devices.map { a -> AssignmentEntry in
            let device: String? = switch a.source {
            case .virtual(let v): VirtualDeviceFactory.label(v)
            case .match: chosen[a.name]?.label
            }
            return AssignmentEntry(name: a.name, endpoint: a.endpoint, channel: a.channel.map(Int.init),
                                   device: device, action: actions[a.name] ?? .add)
        }
        let removals = Set(runningByName.keys).subtracting(p.devices.map(\.name)).sorted()
        let upToDate = running != nil && removals.isEmpty && actions.values.allSatisfy { $0 == .keep }
        return Plan(profile: p.sourcePath, host: p.selectedHost, upToDate: upToDate, runningApply: running != nil,
                    endpoints: p.orderedEndpoints.map {
                        .init(name: $0.name, kind: $0.kindName, address: $0.addressDescription, resolved: resolved[$0.name])
                    },
                    assignments: assignments, removals: removals,
                    conflicts: MatchConflict.all(in: p, present: present),
                    heldByHost: HostHeldDevice.all(in: p, present: present, hostUse: hostUse, chosen: chosen))
    }
}

extension Plan {
    /// Where each libvirt endpoint's domain is now, by endpoint name.
    public static func resolvedAddresses(_ p: Profile) async -> [String: String] {
        var out: [String: String] = [:]
        for e in p.orderedEndpoints {
            if case .libvirt(let domain, let uri) = e.kind { out[e.name] = await LibvirtEndpoints.describe(domain: domain, uri: uri) }
        }
        return out
    }
}
