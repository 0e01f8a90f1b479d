import Devices
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Libvirt
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
    var runners: [String: AssignmentRunner] = [:]
    /// Every device the runners have open (for an emergency stop).
    public nonisolated let openDevices = OpenDevices()
    private var links: [String: SpiceEndpointLink] = [:]
    /// Lifecycle event subscriptions, one per libvirt URI the profile uses.
    private var domainWatches: [String: Task<Void, Never>] = [:]
    /// Physical devices whose open failed, retried with backoff (not in a loop).
    var failedOpens: [String: FailedOpen] = [:]
    /// The devices present at the last pass, for status's conflicts.
    var lastPresent: [USBDeviceInfo] = []
    /// Matching devices the last pass left to the host, for status (and
    /// logged once each, not every pass).
    var heldByHost: [HostHeldDevice] = []
    /// Reads what the host uses; tests point it at a tree of their own.
    let hostUse: HostUse

    /// `--log-level`: when set, it wins over the profile's levels.
    private let levelOverride: Logger.Level?

    public init(monitor: any USBDeviceMonitor, environment: [String: String], logger: Logger,
                levelOverride: Logger.Level? = nil, hostUse: HostUse = HostUse()) {
        self.monitor = monitor
        self.hostUse = hostUse
        self.environment = environment
        self.logger = logger
        self.levelOverride = levelOverride
    }

    /// Makes `newProfile` the desired state and converges to it.
    public func apply(_ newProfile: Profile) async {
        profile = newProfile
        await reconcile()
    }

    /// One pass against the current profile (device events, ended sessions).
    public func reconcile() async {
        guard let profile else { return }
        let desired = Dictionary(profile.devices.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        // Stop what is gone or changed (an assignment, or the endpoint it
        // uses); a change of the log level alone is applied in place.
        for (name, runner) in runners {
            let wanted = desired[name]
            let endpoint = wanted.flatMap { profile.endpoints[$0.endpoint] }
            if let wanted, endpoint == runner.endpoint, wanted.ignoringLog == (await runner.assignment).ignoringLog {
                let digest = profile.desiredDigest(of: wanted)
                if digest != (await runner.desiredDigest) {
                    await runner.update(wanted, level: level(for: wanted, in: profile), desiredDigest: digest)
                }
                continue
            }
            logger.info(wanted == nil ? "assignment removed" : "assignment changed", metadata: ["assignment": "\(name)"])
            await runner.stop()
            runners[name] = nil
        }
        await updateLinks(profile)
        await updateDomainWatches(profile)
        // Start what is new.
        for assignment in profile.devices where runners[assignment.name] == nil {
            guard let endpoint = profile.endpoints[assignment.endpoint] else { continue }
            await start(assignment, endpoint, profile)
        }
        await bindPhysicalDevices(profile)
    }

    /// SIGHUP or a file change: displaced and rejected sessions, and devices
    /// that failed to open, try again at once.
    public func retryWaiting() async {
        failedOpens = [:]
        for runner in runners.values { await runner.retry() }
    }

    public func status() async -> [AssignmentStatus] {
        guard let profile else { return [] }
        var out: [AssignmentStatus] = []
        for a in profile.devices {
            if let r = runners[a.name] { out.append(await r.status(profileName: profile.name)) }
        }
        return out
    }

    /// What /metrics shows, one sample per running session.
    func samples() async -> [SessionSample] {
        guard let profile else { return [] }
        var out: [SessionSample] = []
        for a in profile.devices {
            if let r = runners[a.name] { out.append(await r.sample()) }
        }
        return out
    }

    /// What the status socket answers: sessions, and the match conflicts
    /// among the devices present at the last pass (as plan shows them).
    public func report() async -> StatusReport {
        StatusReport(sessions: await status(), profilePath: profile?.sourcePath,
                     conflicts: profile.map { MatchConflict.all(in: $0, present: lastPresent) } ?? [],
                     heldByHost: heldByHost)
    }

    /// Disconnects every device cleanly and closes every connection.
    public func shutdown() async {
        // In parallel: each stop is bounded, so the whole is bounded by the slowest.
        await withTaskGroup(of: Void.self) { group in
            for runner in runners.values { group.addTask { await runner.stop() } }
        }
        runners = [:]
        for (_, link) in links { await link.close() }
        links = [:]
        for (_, watch) in domainWatches { watch.cancel() }
        domainWatches = [:]
    }

    /// Subscribes to the lifecycle events of each libvirt URI in use.
    private func updateDomainWatches(_ profile: Profile) async {
        let uris = Set(profile.endpoints.values.compactMap { e -> String? in
            if case .libvirt(_, let uri) = e.kind { return uri }
            return nil
        })
        for (uri, watch) in domainWatches where !uris.contains(uri) {
            watch.cancel()
            domainWatches[uri] = nil
        }
        // The first libvirt endpoint loads libvirt; without it, say so once
        // (each assignment to such an endpoint shows it as its error too).
        if !uris.isEmpty && domainWatches.isEmpty, let problem = await Libvirt.libraryProblem() {
            logger.error("\(problem)")
        }
        for uri in uris where domainWatches[uri] == nil {
            let events = Libvirt.shared.events(uri: uri)
            domainWatches[uri] = Task { [weak self] in
                for await event in events { await self?.domainChanged(event) }
            }
        }
    }

    /// A domain started, stopped or changed: its assignments try again now
    /// instead of waiting out a backoff or a re-check.
    func domainChanged(_ event: DomainEvent) async {
        logger.debug("libvirt domain event", metadata: ["domain": "\(event.domain)", "event": "\(event.kind)"])
        for runner in runners.values {
            if case .libvirt(let domain, let uri) = runner.endpoint.kind, domain == event.domain, uri == event.uri {
                await runner.retry()
            }
        }
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
        let runner = AssignmentRunner(assignment: assignment, endpoint: endpoint, profilePath: profile.sourcePath,
                                      link: links[endpoint.name], logger: logger,
                                      level: level(for: assignment, in: profile),
                                      desiredDigest: profile.desiredDigest(of: assignment), openDevices: openDevices)
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

    /// The level an assignment logs at: `--log-level`, else the profile's.
    private func level(for assignment: Assignment, in profile: Profile) -> Logger.Level {
        levelOverride ?? Logger.Level(rawValue: profile.logLevel(for: assignment).rawValue) ?? .info
    }

    private func logger(for name: String, _ level: LogLevel) -> Logger {
        var l = logger
        l.logLevel = levelOverride ?? Logger.Level(rawValue: level.rawValue) ?? l.logLevel
        return l
    }
}
