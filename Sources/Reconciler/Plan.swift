import Devices
import Profile

/// What apply would do now: endpoints, each assignment with the device it
/// would get, sessions a running apply would drop, and match conflicts.
public struct Plan: Codable, Sendable {
    public struct EndpointEntry: Codable, Sendable {
        public var name: String
        public var kind: String
        public var address: String
    }

    public struct AssignmentEntry: Codable, Sendable {
        public var name: String
        public var endpoint: String
        public var channel: Int?
        /// The device it would get now: `virtual:KIND`, `VVVV:PPPP@PORT`, or nil (none present).
        public var device: String?
        /// add (not running yet), keep (running, profile unchanged), update (running, profile changed).
        public var action: String
    }

    public struct Conflict: Codable, Sendable {
        public var first: String
        public var second: String
        /// Present devices both would match; the first assignment gets them.
        public var devices: [String]
    }

    public var profile: String
    public var upToDate: Bool
    public var runningApply: Bool
    public var endpoints: [EndpointEntry]
    public var assignments: [AssignmentEntry]
    public var removals: [String]
    public var conflicts: [Conflict]

    enum CodingKeys: String, CodingKey {
        case profile, endpoints, assignments, removals, conflicts
        case upToDate = "up_to_date", runningApply = "running_apply"
    }

    public static func make(_ p: Profile, present: [USBDeviceInfo], running: StatusReport?, digest: String?) -> Plan {
        let upToDate = running != nil && running?.profileDigest == digest
        let runningNames = Set(running?.sessions.map(\.name) ?? [])
        var taken: Set<String> = []
        let assignments = p.devices.map { a -> AssignmentEntry in
            var device: String?
            switch a.source {
            case .virtual(let v): device = VirtualDeviceFactory.label(v)
            case .match(let rule):
                if let d = present.first(where: { !taken.contains($0.key) && Reconciler.matches(rule, $0) }) {
                    taken.insert(d.key)
                    device = d.label
                }
            }
            let action = !runningNames.contains(a.name) ? "add" : (upToDate ? "keep" : "update")
            return AssignmentEntry(name: a.name, endpoint: a.endpoint, channel: a.channel.map(Int.init),
                                   device: device, action: action)
        }
        let conflicts = p.overlaps.map { pair in
            Conflict(first: pair.0.name, second: pair.1.name, devices: present.filter { d in
                [pair.0, pair.1].allSatisfy { if case .match(let r) = $0.source { Reconciler.matches(r, d) } else { false } }
            }.map(\.label))
        }
        let names = Set(p.devices.map(\.name))
        return Plan(profile: p.sourcePath, upToDate: upToDate, runningApply: running != nil,
                    endpoints: p.orderedEndpoints.map { .init(name: $0.name, kind: $0.kindName, address: "\($0.address)") },
                    assignments: assignments, removals: runningNames.subtracting(names).sorted(), conflicts: conflicts)
    }

    public func printText() {
        print("profile \(profile): " + (runningApply ? (upToDate ? "running, up to date" : "running, changes pending")
                                                       : "not running"))
        for e in endpoints {
            print("endpoint \(e.name) (\(e.kind) \(e.address))")
            for a in assignments where a.endpoint == e.name {
                let sign = a.action == "add" ? "+" : (a.action == "keep" ? "=" : "~")
                print("  \(sign) \(a.name)  channel \(a.channel.map(String.init) ?? "auto")  device \(a.device ?? "none present")")
            }
        }
        for r in removals { print("  - \(r)") }
        for c in conflicts {
            print("conflict: \(c.first) and \(c.second) overlap" + (c.devices.isEmpty ? "" : "; \(c.devices.joined(separator: ", ")) go to \(c.first)"))
        }
    }
}
