import ArgumentParser
import Common
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
import Reconciler

/// `usbredir apply`: loads the profile, sets up logging, and hands over to
/// the Reconciler's Controller (Sources/Reconciler/Controller/Controller.swift),
/// which runs the reconcile passes (Sources/Reconciler/Reconciler.swift).
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

    @Option(help: ArgumentHelp("Serve Prometheus metrics at http://ADDRESS/metrics (overrides the profile's metrics:).",
                               valueName: "address"),
            transform: { text in
                switch HostPort.commandLine(text) {
                case .success(let address): return address
                case .failure(let error): throw ValidationError("--metrics: \(error)")
                }
            })
    var metrics: HostPort?

    @Argument(help: "The profile to apply.")
    var profile: String

    func run() async throws {
        let (loaded, _) = ProfileLoading.load(profile, profileOptions)
        guard let initial = loaded else { throw Exit.invalidProfile }
        let override = logOptions.level?.loggerLevel
        let level = override ?? Logger.Level(rawValue: initial.log.rawValue) ?? .info
        LineLogHandler.bootstrap(format: logOptions.format, level: level)
        var logger = Logger(label: "usbredir")
        logger.logLevel = level
        let reconciler = Reconciler(monitor: DeviceMonitors.system(), environment: ProcessInfo.processInfo.environment,
                                    logger: logger, levelOverride: override)
        let controller = Controller(profilePath: profile, host: profileOptions.host, strict: profileOptions.strict,
                                    socketPath: socket ?? StatusSocket.path(forProfile: initial.name),
                                    metricsAddress: metrics ?? initial.metrics,
                                    reconciler: reconciler, logger: logger)
        do {
            try await controller.run(initial: initial)
        } catch {
            logger.critical("\(error)")
            throw Exit.runtimeFailure
        }
    }
}
