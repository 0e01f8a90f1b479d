import ArgumentParser
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
import NIOConcurrencyHelpers
import Profile
import Reconciler

/// `usbredir attach DEVICE --to ENDPOINT`: a one-off redirection without a
/// profile file. It builds a profile of one assignment in memory and runs
/// it with the same Controller and Reconciler as apply; it prints one line
/// per state change and ends at SIGINT/SIGTERM or when the device leaves.
struct AttachCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "Redirect one device to one VM until interrupted or the device leaves.",
        discussion: """
            DEVICE is VID:PID, VID:PID:SERIAL, a port path such as 1-3.2 (as list shows them), \
            or image:PATH[,ro] for a virtual stick over a disk image. ENDPOINT is spice://HOST:PORT, \
            spice+unix://PATH, libvirt://DOMAIN[?uri=URI], tcp://HOST:PORT (raw usbredir, QEMU listens) or listen://ADDRESS:PORT \
            (raw usbredir, QEMU connects). Exits 0 after SIGINT or SIGTERM (the device is disconnected \
            cleanly) or when a physical device is unplugged; 1 when the device or endpoint is wrong \
            or the VM refuses the password.
            """)

    @Argument(help: "The device: VID:PID, VID:PID:SERIAL, a port path (1-3.2) or image:PATH[,ro].")
    var device: String

    @Option(name: .customLong("to"), help: "The endpoint: spice://, spice+unix://, libvirt://, tcp:// or listen:// URL.")
    var endpoint: String

    @Option(name: .customLong("password-file"), help: "File holding the SPICE password.")
    var passwordFile: String?

    @Option(name: .customLong("password-env"), help: "Environment variable holding the SPICE password.")
    var passwordEnv: String?

    @Option(help: "SPICE usbredir channel to use (default: the lowest free one).")
    var channel: UInt8?

    @Option(help: "Status socket path (default: $XDG_RUNTIME_DIR or /run/usbredir, usbredir-attach-PID.sock).")
    var socket: String?

    @OptionGroup var logOptions: LogOptions

    func validate() throws {
        if passwordFile != nil && passwordEnv != nil {
            throw ValidationError("give one of --password-file and --password-env")
        }
    }

    func run() async throws {
        let cwd = FileManager.default.currentDirectoryPath
        let password: PasswordSource? = passwordFile.map { .file(URL(fileURLWithPath: $0, relativeTo: URL(fileURLWithPath: cwd + "/")).path) }
            ?? passwordEnv.map { .env($0) }
        let profile: Profile
        do {
            profile = try OneOff.profile(device: device, endpoint: endpoint, password: password, channel: channel,
                                         log: .error, directory: cwd)
        } catch {
            throw AttachFailure.print(error.description)
        }
        let override = logOptions.level?.loggerLevel
        let level = override ?? .error
        LineLogHandler.bootstrap(format: logOptions.format, level: level)
        var logger = Logger(label: "usbredir")
        logger.logLevel = level
        try await requirePresent(profile)
        // A libvirt domain must exist (and be able to carry usbredir): a
        // one-off attach to a name libvirt does not know is a typo.
        if let problem = await LibvirtCheck.warnings(profile).first {
            throw AttachFailure.print(problem.message)
        }
        let reconciler = Reconciler(monitor: DeviceMonitors.system(), environment: ProcessInfo.processInfo.environment,
                                    logger: logger, levelOverride: override)
        let controller = Controller(profilePath: profile.sourcePath, host: nil,
                                    socketPath: socket ?? StatusSocket.path(forProfile: "attach-\(getpid())"),
                                    reloadable: false, reconciler: reconciler, logger: logger)
        let physical = if case .match = profile.devices.first?.source { true } else { false }
        let watch = AttachWatch(reconciler: reconciler, physical: physical)
        let watching = Task { await watch.run() }
        defer { watching.cancel() }
        do {
            try await controller.run(initial: profile)
        } catch {
            throw AttachFailure.print("\(error)")
        }
        if let failure = watch.failure { throw AttachFailure.print(failure) }
    }

    /// A physical device must be there when attach starts: a one-off
    /// redirection of nothing is a typo, not a wait.
    private func requirePresent(_ profile: Profile) async throws {
        guard case .match(let rule) = profile.devices.first?.source else { return }
        let present = (try? await DeviceMonitors.system().presentDevices()) ?? []
        guard present.contains(where: { rule.matches(vendor: $0.vendorID, product: $0.productID, serial: $0.serial, port: $0.port) })
        else { throw AttachFailure.print("no device present matches '\(device)' (usbredir list shows the devices present)") }
    }
}

/// Prints `usbredir attach: MESSAGE` on standard error and exits 1.
enum AttachFailure {
    static func print(_ message: String) -> ExitCode {
        StandardStream.error("usbredir attach: \(message)\n")
        return Exit.runtimeFailure
    }
}

/// Follows the one assignment's status: one line per change on standard
/// output; a wrong password (or another error no retry fixes) ends attach
/// with status 1, a physical device leaving ends it with 0. Both end it
/// the way SIGTERM does, so the device is disconnected cleanly.
final class AttachWatch: Sendable {
    let reconciler: Reconciler
    /// Only a physical device can leave; a virtual one stays until the end.
    let physical: Bool
    private let failureBox = NIOLockedValueBox<String?>(nil)
    static let pollNanoseconds: UInt64 = 100_000_000

    init(reconciler: Reconciler, physical: Bool) {
        self.reconciler = reconciler
        self.physical = physical
    }

    var failure: String? { failureBox.withLockedValue { $0 } }

    func run() async {
        var last: String?
        var hadDevice = false
        while !Task.isCancelled {
            if let s = await reconciler.status().first {
                let line = Self.line(s)
                if line != last { Self.emit(line) }
                last = line
                if s.state == .error {
                    failureBox.withLockedValue { $0 = s.lastError ?? "error" }
                    return stop()
                }
                if hadDevice && s.device == nil { Self.emit("device left"); return stop() }
                hadDevice = physical && s.device != nil
            }
            try? await Task.sleep(nanoseconds: Self.pollNanoseconds)
        }
    }

    /// `connected channel 0 device 2341:0043`, `backoff: connection refused`.
    static func line(_ s: AssignmentStatus) -> String {
        var text = s.state.rawValue
        if let c = s.channel { text += " channel \(c)" }
        if let d = s.device { text += " device \(d)" }
        if s.state != .connected && s.state != .connecting, let e = s.lastError { text += ": \(e)" }
        return text
    }

    static func emit(_ line: String) {
        StandardStream.output(line + "\n")
    }

    private func stop() { kill(getpid(), SIGTERM) }
}
