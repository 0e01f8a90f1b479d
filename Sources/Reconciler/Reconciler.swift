import Devices
import Foundation
import Logging
import Profile

/// Level-triggered reconciler (in the manner of Kubernetes controllers):
/// each pass computes the desired state from scratch (profile x devices
/// present now), compares it with the running sessions, and acts on the
/// difference only. Unchanged sessions are not touched, not even reconnected.
public actor Reconciler {
    let monitor: any USBDeviceMonitor
    private let environment: [String: String]
    let logger: Logger
    private var profile: Profile?
    public private(set) var profileDigest: String?
    var runners: [String: AssignmentRunner] = [:]
    private var links: [String: SpiceEndpointLink] = [:]
    /// Physical devices we could not open, so a pass does not retry them in a loop.
    var failedOpens: [String: String] = [:]

    /// `--log-level`: when set, it wins over the profile's levels.
    private let levelOverride: Logger.Level?

    public init(monitor: any USBDeviceMonitor, environment: [String: String], logger: Logger,
                levelOverride: Logger.Level? = nil) {
        self.monitor = monitor
        self.environment = environment
        self.logger = logger
        self.levelOverride = levelOverride
    }

    public var profileName: String {
        profile.map { URL(fileURLWithPath: $0.sourcePath).deletingPathExtension().lastPathComponent } ?? ""
    }

    /// Makes `newProfile` the desired state and converges to it.
    public func apply(_ newProfile: Profile, digest: String?) async {
        profile = newProfile
        profileDigest = digest
        await reconcile()
    }

    /// One pass against the current profile (device events, ended sessions).
    public func reconcile() async {
        guard let profile else { return }
        let desired = Dictionary(profile.devices.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        // Stop what is gone or changed (an assignment, or the endpoint it uses).
        for (name, runner) in runners {
            let wanted = desired[name]
            let endpoint = wanted.flatMap { profile.endpoints[$0.endpoint] }
            if wanted != runner.assignment || endpoint != runner.endpoint {
                logger.info(wanted == nil ? "assignment removed" : "assignment changed", metadata: ["assignment": "\(name)"])
                await runner.stop()
                runners[name] = nil
            }
        }
        await updateLinks(profile)
        // Start what is new.
        for assignment in profile.devices where runners[assignment.name] == nil {
            guard let endpoint = profile.endpoints[assignment.endpoint] else { continue }
            await start(assignment, endpoint, profile)
        }
        await bindPhysicalDevices(profile)
    }

    /// SIGHUP or a file change: displaced and rejected sessions try again.
    public func retryWaiting() async {
        for runner in runners.values { await runner.retry() }
    }

    public func status() async -> [SessionStatus] {
        guard let profile else { return [] }
        var out: [SessionStatus] = []
        for a in profile.devices {
            if let r = runners[a.name] { out.append(await r.status(profileName: profileName)) }
        }
        return out
    }

    /// Disconnects every device cleanly and closes every connection.
    public func shutdown() async {
        for (_, runner) in runners { await runner.stop() }
        runners = [:]
        for (_, link) in links { await link.close() }
        links = [:]
    }

    // MARK: Pieces of a pass

    private func updateLinks(_ profile: Profile) async {
        for (name, link) in links where profile.endpoints[name] != link.endpoint
            || !profile.devices.contains(where: { $0.endpoint == name }) {
            await link.close()
            links[name] = nil
        }
        for endpoint in profile.orderedEndpoints where endpoint.isSpice {
            let assignments = profile.devices.filter { $0.endpoint == endpoint.name }
            guard !assignments.isEmpty else { continue }
            let link = links[endpoint.name] ?? SpiceEndpointLink(endpoint: endpoint, environment: environment,
                                                                  logger: logger(for: endpoint.name, profile.log))
            links[endpoint.name] = link
            await link.setAssignments(assignments.map { ($0.name, $0.channel) })
        }
    }

    private func start(_ assignment: Assignment, _ endpoint: Endpoint, _ profile: Profile) async {
        let level = profile.logLevel(for: assignment)
        let runner = AssignmentRunner(assignment: assignment, endpoint: endpoint, profilePath: profile.sourcePath,
                                      link: links[endpoint.name], logger: logger(for: assignment.name, level))
        runners[assignment.name] = runner
        await runner.start()
        if case .virtual(let v) = assignment.source {
            do {
                let device = try VirtualDeviceFactory.make(v, assignment: assignment.name)
                try await runner.plug(device, info: nil, label: VirtualDeviceFactory.label(v))
            } catch {
                logger.error("cannot create virtual device: \(error)", metadata: ["assignment": "\(assignment.name)"])
            }
        }
    }

    private func logger(for name: String, _ level: LogLevel) -> Logger {
        var l = logger
        l.logLevel = levelOverride ?? Logger.Level(rawValue: level.rawValue) ?? l.logLevel
        return l
    }
}
