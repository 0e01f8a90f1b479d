import Logging
import Profile
import Transport

/// The one SPICE session this process keeps with a VM; every assignment to
/// the endpoint links its usbredir channel under it. It is also the one
/// channel allocator: pinned assignments get their pin, the others the
/// lowest free id in file order, and a channel once given stays with its
/// assignment (SpiceSession only refuses ids it lacks or has linked).
actor SpiceEndpointLink {
    let endpoint: Endpoint
    private let environment: [String: String]
    private let logger: Logger
    private var current: SpiceSession?
    private var connecting: Task<SpiceSession, Error>?
    private var order: [(name: String, pinned: UInt8?)] = []
    private var plan: [String: UInt8] = [:]

    init(endpoint: Endpoint, environment: [String: String], logger: Logger) {
        self.endpoint = endpoint
        self.environment = environment
        self.logger = logger
    }

    /// The live session, connecting first when there is none.
    /// Where the last session linked (a libvirt domain's server is known
    /// only once resolved).
    var lastServer: SpiceServerAddress? { current?.configuration.server }

    func session() async throws -> SpiceSession {
        if let s = current, !s.isClosed { return s }
        if let pending = connecting { return try await Self.value(of: pending) }
        let task = Task { try await connect() }
        connecting = task
        defer { connecting = nil }
        let s = try await Self.value(of: task)
        current = s
        return s
    }

    /// The shared connect, abandoned (and cancelled) when the caller is
    /// cancelled: a stop must not wait for a link to a silent server.
    private static func value(of task: Task<SpiceSession, Error>) async throws -> SpiceSession {
        try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
    }

    private func connect() async throws -> SpiceSession {
        try await EndpointDialer.dialSpice(endpoint, environment: environment, logger: logger)
    }

    func close() {
        current?.close()
        current = nil
    }

    /// The assignments of this endpoint in file order, with their pins.
    func setAssignments(_ assignments: [(name: String, pinned: UInt8?)]) {
        order = assignments
        let names = Set(assignments.map(\.name))
        plan = plan.filter { names.contains($0.key) }
    }

    /// The channel `name` should link, given the channels the VM offers.
    func channel(for name: String, available: [UInt8]) -> UInt8? {
        for entry in order where entry.pinned != nil { plan[entry.name] = entry.pinned }
        for entry in order where plan[entry.name] == nil || !available.contains(plan[entry.name]!) {
            let taken = Set(plan.filter { $0.key != entry.name }.values)
            if let free = available.first(where: { !taken.contains($0) }) { plan[entry.name] = free }
        }
        return plan[name]
    }
}
