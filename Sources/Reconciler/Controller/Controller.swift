import Common
import Devices
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Profile
import ServiceLifecycle
import UnixSignals

/// The apply loop: what makes the reconciler run. It reconciles on start,
/// on a change of the profile file, on SIGHUP, on device hotplug and on a
/// slow tick, and stops every session cleanly on SIGINT/SIGTERM. It also
/// serves the status socket, and /metrics when asked, for as long as it runs.
public struct Controller: Sendable {
    public let profilePath: String
    /// `--host`: the hosts: section to use instead of this machine's.
    public let host: String?
    /// `--strict`: a reloaded profile with warnings is refused too.
    public let strict: Bool
    public let socketPath: String
    /// False for a profile built in memory (`attach`): no file to watch,
    /// and SIGHUP retries waiting sessions instead of reading a file.
    public let reloadable: Bool
    /// Where /metrics is served (`--metrics`, else the profile's `metrics:`).
    public let metricsAddress: HostPort?
    let reconciler: Reconciler
    let logger: Logger
    /// systemd's Type=notify: READY=1 after the first pass, STATUS= lines.
    let notifier: ServiceNotifier
    /// How often the STATUS= line is refreshed (sent only when it changed).
    static let notifyStatusSeconds: UInt64 = 1
    /// A safety net for a level-triggered loop: reconcile now and then anyway.
    static let tickSeconds: UInt64 = 5
    /// Lets an editor finish writing before the file is read again.
    static let settleNanoseconds: UInt64 = 100_000_000

    enum Trigger: Sendable { case file, hangup, device, tick }

    public init(profilePath: String, host: String?, strict: Bool = false, socketPath: String, reloadable: Bool = true,
                metricsAddress: HostPort? = nil, reconciler: Reconciler, logger: Logger,
                notifier: ServiceNotifier = ServiceNotifier()) {
        self.profilePath = profilePath
        self.host = host
        self.strict = strict
        self.socketPath = socketPath
        self.reloadable = reloadable
        self.metricsAddress = metricsAddress
        self.reconciler = reconciler
        self.logger = logger
        self.notifier = notifier
    }

    /// Runs until SIGINT or SIGTERM, then disconnects every device. Throws
    /// before touching anything when another apply serves the status socket
    /// or the metrics address is taken.
    ///
    /// The parts run as one swift-service-lifecycle ServiceGroup, which owns
    /// the stop signals. It stops them in the reverse of this order: the
    /// reconcile loop first (devices disconnected while status and /metrics
    /// still answer), then the status socket, then /metrics.
    public func run(initial: Profile) async throws {
        StopSignals.prepare()
        let status = try await startStatusServer()
        let metrics: MetricsServer?
        do { metrics = try await startMetricsServer() } catch {
            status?.stop()
            throw error
        }
        // The servers may end on their own (a socket error); apply goes on.
        let servers: [any Service] = [metrics as (any Service)?, status].compactMap { $0 }
        let services = servers.map {
            ServiceGroupConfiguration.ServiceConfiguration(service: $0, successTerminationBehavior: .ignore,
                                                           failureTerminationBehavior: .ignore)
        } + [.init(service: ReconcileLoop(controller: self, initial: initial))]
        var groupLogger = logger
        groupLogger.logLevel = max(logger.logLevel, .notice)   // its own lines are debug/info chatter
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: groupLogger))
        try await group.run()
    }

    /// The reconcile loop (ReconcileLoop's body): the first pass, READY=1,
    /// passes on every trigger until the group's graceful shutdown, then
    /// every device disconnected.
    func serve(_ initial: Profile) async {
        let impatient = await stopAtOnceOnASecondSignal()
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await reconciler.apply(initial)
        logger.info("applied profile", metadata: ["profile": "\(profilePath)", "assignments": "\(initial.devices.count)"])
        notifier.ready(status: ServiceNotifier.summary(await reconciler.status()))
        let (triggers, feed) = AsyncStream<Trigger>.makeStream()
        let sources = startTriggerSources(feed, hangups: hangups)
        // Triggers are served on their own task, so a stop is seen even
        // while a pass is still busy.
        let passes = Task { for await trigger in triggers { await handle(trigger) } }
        try? await gracefulShutdown()
        logger.info("stopping: disconnecting every device (a second SIGINT/SIGTERM stops at once)")
        notifier.stopping()
        passes.cancel()
        sources.forEach { $0.cancel() }
        feed.finish()
        await reconciler.shutdown()
        impatient.cancel()
    }

    /// A second stop signal: how long devices get to close (drivers re-attached).
    static let emergencyCloseSeconds = 1.0
    /// The exit status after a second stop signal (not a clean stop).
    static let interruptedStatus: Int32 = 1

    /// The first SIGINT/SIGTERM starts the group's ordered stop; a second
    /// one closes every device within a second and exits 1.
    private func stopAtOnceOnASecondSignal() async -> Task<Void, Never> {
        let stops = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        return Task { [reconciler, logger] in
            var seen = 0
            for await _ in stops {
                seen += 1
                guard seen >= 2 else { continue }
                logger.warning("stopping at once: closing every device")
                await reconciler.openDevices.closeAll(within: Self.emergencyCloseSeconds)
                exit(Self.interruptedStatus)
            }
        }
    }

    private func startTriggerSources(_ feed: AsyncStream<Trigger>.Continuation,
                                     hangups: UnixSignalsSequence) -> [Task<Void, Never>] {
        let watcher = reloadable ? FileWatcher(path: profilePath) : nil
        if reloadable && watcher == nil { logger.warning("cannot watch the profile file; reload with SIGHUP") }
        let monitor = reconciler.monitor
        let (notifier, reconciler) = (self.notifier, self.reconciler)
        var tasks: [Task<Void, Never>] = []
        if notifier.isEnabled {
            // Sessions connect and drop between passes: the STATUS= line
            // follows them, coalesced to one datagram per change and second.
            tasks.append(Task {
                while !Task.isCancelled {
                    try? await Task.sleep(nanoseconds: Self.notifyStatusSeconds * 1_000_000_000)
                    notifier.status(ServiceNotifier.summary(await reconciler.status()))
                }
            })
        }
        return tasks + [
            Task { for await _ in watcher?.changes ?? AsyncStream(unfolding: { nil }) { feed.yield(.file) } },
            Task { for await _ in hangups { feed.yield(.hangup) } },
            Task { for await _ in monitor.events() { feed.yield(.device) } },
            Task {
                while !Task.isCancelled {
                    try? await Task.sleep(nanoseconds: Self.tickSeconds * 1_000_000_000)
                    feed.yield(.tick)
                }
            },
        ]
    }
    private func handle(_ trigger: Trigger) async {
        switch trigger {
        case .hangup where !reloadable:
            await reconciler.retryWaiting()
            await reconciler.reconcile()
        case .file, .hangup:
            try? await Task.sleep(nanoseconds: Self.settleNanoseconds)
            await reload(reason: trigger == .file ? "profile changed" : "SIGHUP")
        case .device, .tick:
            await reconciler.reconcile()
        }
    }

    /// Reads the profile again; an invalid one is reported and the running
    /// state is kept (architecture.md).
    private func reload(reason: String) async {
        var result = ProfileLoader.load(path: profilePath, hostname: host)
        if strict { result = result.strict }
        guard let profile = result.profile else {
            for d in result.errors { logger.error("\(d.description)") }
            logger.error("\(reason): the new profile is invalid; keeping the running state")
            return
        }
        logger.info("\(reason): reconciling")
        await reconciler.retryWaiting()
        await reconciler.apply(profile)
    }
}
