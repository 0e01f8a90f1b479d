import ArgumentParser
import Devices
import Foundation
import Logging
import Profile
import Reconciler

struct ApplyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Run the redirections a profile describes, and keep them converged.",
        discussion: """
            Runs in the foreground until SIGINT or SIGTERM, then disconnects every device \
            cleanly and exits 0. SIGHUP or a change of the profile file reconciles again; \
            an invalid new profile is reported and the running state is kept.
            """)

    @OptionGroup var profileOptions: ProfileOptions
    @OptionGroup var logOptions: LogOptions

    @Option(help: "Status socket path (default: $XDG_RUNTIME_DIR or /run/usbredir, usbredir-PROFILE.sock).")
    var socket: String?

    @Argument(help: "The profile to apply.")
    var profile: String

    func run() async throws {
        let (loaded, _) = ProfileLoading.load(profile, host: profileOptions.host)
        guard let initial = loaded else { throw Exit.invalidProfile }
        let level = logOptions.level ?? Logger.Level(rawValue: initial.log.rawValue) ?? .info
        LineLogHandler.bootstrap(format: logOptions.format, level: level)
        var logger = Logger(label: "usbredir")
        logger.logLevel = level
        let runner = ApplyRunner(path: profile, host: profileOptions.host, logger: logger,
                                 reconciler: Reconciler(monitor: DeviceMonitors.system(), environment: ProcessInfo.processInfo.environment,
                                                        logger: logger, levelOverride: logOptions.level))
        let socketPath = socket ?? StatusSocket.path(forProfile: ProfileLoading.profileName(profile))
        try await runner.run(initial: initial, socketPath: socketPath)
    }
}

struct LogOptions: ParsableArguments {
    @Option(name: .customLong("log-level"), help: "Override the profile's log levels (trace, debug, info, notice, warning, error, critical).")
    var levelName: String?

    @Option(name: .customLong("log-format"), help: "text or json.")
    var formatName: String = "text"

    var level: Logger.Level? { levelName.flatMap { Logger.Level(rawValue: $0) } }
    var format: LineLogHandler.Format { LineLogHandler.Format(rawValue: formatName) ?? .text }

    func validate() throws {
        if let levelName, Logger.Level(rawValue: levelName) == nil {
            throw ValidationError("unknown log level '\(levelName)'")
        }
        if LineLogHandler.Format(rawValue: formatName) == nil {
            throw ValidationError("--log-format is text or json")
        }
    }
}

/// The apply loop: reconcile on start, on file changes, SIGHUP, device
/// events and a slow tick; stop cleanly on SIGINT/SIGTERM.
struct ApplyRunner {
    let path: String
    let host: String?
    let logger: Logger
    let reconciler: Reconciler
    /// A safety net for a level-triggered loop: reconcile now and then anyway.
    static let tickSeconds: UInt64 = 5

    enum Trigger: Sendable { case file, hangup, stop, device, tick }

    func run(initial: Profile, socketPath: String) async throws {
        let signals = SignalWatcher([SIGINT, SIGTERM, SIGHUP])
        await reconciler.apply(initial, digest: ProfileLoading.digest(path: path, host: host))
        let reconciler = self.reconciler
        let server = try? await StatusServer.start(path: socketPath) {
            StatusReport(sessions: await reconciler.status(), profileDigest: await reconciler.profileDigest,
                         profilePath: path)
        }
        if server == nil { logger.warning("status socket unavailable", metadata: ["path": "\(socketPath)"]) }
        logger.info("applied profile", metadata: ["profile": "\(path)", "assignments": "\(initial.devices.count)"])
        let (triggers, feed) = AsyncStream<Trigger>.makeStream()
        let watcher = FileWatcher(path: path)
        let tasks = [
            Task { for await _ in watcher?.changes ?? AsyncStream(unfolding: { nil }) { feed.yield(.file) } },
            Task { for await s in signals.signals { feed.yield(s == SIGHUP ? .hangup : .stop) } },
            Task { for await _ in DeviceMonitors.system().events() { feed.yield(.device) } },
            Task {
                while !Task.isCancelled {
                    try? await Task.sleep(nanoseconds: Self.tickSeconds * 1_000_000_000)
                    feed.yield(.tick)
                }
            },
        ]
        for await trigger in triggers {
            switch trigger {
            case .stop:
                logger.info("stopping: disconnecting every device")
                await reconciler.shutdown()
                server?.stop()
                tasks.forEach { $0.cancel() }
                return
            case .file, .hangup:
                try? await Task.sleep(nanoseconds: 100_000_000)   // let an editor finish writing
                await reload(reason: trigger == .file ? "profile changed" : "SIGHUP")
            case .device, .tick:
                await reconciler.reconcile()
            }
        }
    }

    private func reload(reason: String) async {
        let result = ProfileLoader.load(path: path, hostname: host)
        guard let profile = result.profile else {
            for d in result.errors { logger.error("\(d.description)") }
            logger.error("\(reason): the new profile is invalid; keeping the running state")
            return
        }
        logger.info("\(reason): reconciling")
        await reconciler.apply(profile, digest: ProfileLoading.digest(path: path, host: host))
        await reconciler.retryWaiting()
    }
}

/// The process's device monitor: libusb, made once; a machine where libusb
/// cannot start still runs virtual devices (with a warning).
enum DeviceMonitors {
    private static let shared: any USBDeviceMonitor = {
        do {
            return try LibUSBMonitor(logger: Logger(label: "usbredir.libusb"))
        } catch {
            Logger(label: "usbredir").warning("libusb unavailable, physical devices are not seen: \(error)")
            return EmptyUSBMonitor()
        }
    }()

    static func system() -> any USBDeviceMonitor { shared }
}
