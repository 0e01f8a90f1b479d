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
import Session
import Transport

/// Runs one assignment: keeps its usbredir channel connected, retrying with
/// backoff, and keeps its session (and counters) for its whole life.
actor AssignmentRunner {
    nonisolated let name: String
    /// The entry it runs; only its log level changes in place (see `update`).
    private(set) var assignment: Assignment
    let endpoint: Endpoint
    let profilePath: String
    let session: RedirectionSession
    private let link: SpiceEndpointLink?
    private let logger: Logger
    private let logLevel: LiveLogLevel
    /// `Profile.desiredDigest` of what it runs, for plan.
    private(set) var desiredDigest: String
    private var loop: Task<Void, Never>?
    private var state = AssignmentState.connecting
    private var since = Date()
    private var lastError: String?
    private var channel: UInt8?
    /// Where the live connection goes (nil while not connected).
    private var address: String?
    private(set) var deviceLabel: String?
    /// The physical device bound to this assignment (nil for virtual ones).
    private(set) var boundDevice: USBDeviceInfo?
    private var retryGeneration = 0
    private var listener: RawUSBRedirListener?
    private var backoff = Backoff()
    private let openDevices: OpenDevices
    private var plugged: (any USBDevice)?
    /// Connections made so far; metrics count the ones after the first.
    private var connections = 0

    init(assignment: Assignment, endpoint: Endpoint, profilePath: String, link: SpiceEndpointLink?,
         logger base: Logger, level: Logger.Level, desiredDigest: String, openDevices: OpenDevices) {
        self.openDevices = openDevices
        self.name = assignment.name
        self.assignment = assignment
        self.endpoint = endpoint
        self.profilePath = profilePath
        self.link = link
        self.desiredDigest = desiredDigest
        logLevel = LiveLogLevel(level)
        var logger = logLevel.logger(from: base)
        logger[metadataKey: "assignment"] = "\(assignment.name)"
        logger[metadataKey: "endpoint"] = "\(endpoint.name)"
        self.logger = logger
        self.session = RedirectionSession(name: assignment.name, logger: logger)
    }

    func start() {
        if case .virtual(let v) = assignment.source {
            deviceLabel = VirtualDeviceFactory.label(v)
        }
        loop = Task { await self.run() }
    }

    /// Closes the device first, tells the VM (device_disconnect, with a
    /// deadline), then ends the connection loop. Bounded: a loop that does
    /// not end within `stopLoopSeconds` is left to finish on its own.
    func stop() async {
        await session.unplug()
        forgetDevice()
        loop?.cancel()
        listener?.close()
        if let loop, !(await completes(within: Self.stopLoopSeconds, { await loop.value })) {
            logger.warning("the connection loop did not end in \(Self.stopLoopSeconds) s; leaving it")
        }
        loop = nil
    }

    static let stopLoopSeconds = 2.0

    /// An edit that changed only the assignment's log level: applied to the
    /// running session, which keeps its connection.
    func update(_ newAssignment: Assignment, level: Logger.Level, desiredDigest: String) {
        if level != logLevel.level { logger.notice("log level now \(level)") }
        assignment = newAssignment
        logLevel.level = level
        self.desiredDigest = desiredDigest
    }

    /// A file change or SIGHUP: a displaced or rejected session tries again.
    func retry() { retryGeneration += 1 }

    func plug(_ device: any USBDevice, info: USBDeviceInfo?, label: String) async throws {
        try await session.plug(device)
        openDevices.add(device)
        plugged = device
        boundDevice = info
        deviceLabel = label
        logger.info("device bound", metadata: ["device": "\(label)"])
    }

    private func forgetDevice() {
        if let plugged { openDevices.remove(plugged) }
        plugged = nil
    }

    func unplug() async {
        await session.unplug()
        forgetDevice()
        if let label = deviceLabel, boundDevice != nil {
            logger.info("device gone", metadata: ["device": "\(label)"])
            deviceLabel = nil    // status shows null while no device is bound
        }
        boundDevice = nil
    }

    var hasDevice: Bool { get async { await session.hasDevice } }

    /// A matched device that could not be opened: status shows why.
    func openFailed(_ why: String) { lastError = why }

    func status(profileName: String) async -> AssignmentStatus {
        let c = await session.counters
        return AssignmentStatus(name: name, profile: profileName, endpoint: endpoint.name,
                                address: state == .connected ? address : nil,
                                channel: endpoint.isSpice ? channel.map(Int.init) : nil, device: deviceLabel,
                                state: await shownState(), since: RFC3339.string(since),
                                bytesIn: c.bytesIn, transfersIn: c.transfersIn,
                                bytesOut: c.bytesOut, transfersOut: c.transfersOut, lastError: lastError,
                                desiredDigest: desiredDigest)
    }

    /// What /metrics shows of this session: the same counters as status.
    func sample() async -> SessionSample {
        SessionSample(assignment: name, endpoint: endpoint.name, state: await shownState(),
                      counters: await session.counters, reconnects: max(0, connections - 1))
    }

    /// A connected channel without a device (or refused by the VM's
    /// filter) shows as such.
    private func shownState() async -> AssignmentState {
        guard state == .connected else { return state }
        switch await session.phase {
        case .waitingForDevice: return .waitingForDevice
        case .rejected: return .rejected
        case .connecting, .connected: return .connected
        }
    }

    // MARK: The connection loop

    private func setState(_ new: AssignmentState, error: String? = nil) {
        if let error { lastError = error }
        guard new != state else { return }
        state = new
        since = Date()
        // One line per state change, never one per attempt.
        switch new {
        case .backoff, .error, .displaced, .rejected:
            logger.warning("session \(new.rawValue)", metadata: lastError.map { ["reason": "\($0)"] } ?? [:])
        default:
            logger.info("session \(new.rawValue)")
        }
    }

    private func run() async {
        while !Task.isCancelled {
            // A retry from backoff (or of a domain that is down) keeps its
            // state until it succeeds: one log line per state change, not
            // one per attempt.
            if state != .backoff && state != .waitingForVM { setState(.connecting) }
            let outcome: Result<SessionEnd, Error>
            do { outcome = .success(try await connectAndServe()) } catch { outcome = .failure(error) }
            if Task.isCancelled { return }
            switch outcome {
            case .success(.rejectedByFilter):
                setState(.rejected, error: "rejected by the VM's usbredir filter")
                await waitForRetry()
            case .success(.transportClosed(.displaced)), .failure(TransportError.displaced):
                setState(.displaced, error: TransportError.displaced.description)
                // Displaced until SIGHUP, a profile change, or (when the
                // server is on this host) the other client leaving.
                let server = await link?.lastServer
                await waitForRetry(until: { server.flatMap(EndpointDialer.displacingClientLeft) == true })
            case .failure(TransportError.wrongPassword):
                setState(.error, error: TransportError.wrongPassword.description)
                await waitForRetry()
            case .failure(let down as DomainDown):
                // Quiet: one line when the state changes, then a lifecycle
                // event (or a slow re-check, in case events were lost) retries.
                setState(.waitingForVM, error: down.description)
                await waitForRetry(atMost: Self.domainRecheckSeconds)
            case .failure(let error as ReconcilerError):
                // An unset password variable, an unreadable password file: no
                // retry helps until the profile changes or SIGHUP.
                setState(.error, error: error.description)
                await waitForRetry()
            case .success(let end):
                setState(.backoff, error: end.description)
                await waitForRetry(atMost: backoff.nextDelay())
            case .failure(let error):
                setState(.backoff, error: "\(error)")
                await waitForRetry(atMost: backoff.nextDelay())
            }
        }
    }

    private func connectAndServe() async throws -> SessionEnd {
        let connector = EndpointDialer(endpoint: endpoint, assignmentName: name, link: link, session: session,
                                       logger: logger)
        return try await connector.serve(
            onConnected: { [weak self] channel, address in await self?.connected(channel: channel, address: address) },
            onIdle: { [weak self] in await self?.setState(.connecting) },
            onListening: { [weak self] listener in await self?.keep(listener) })
    }

    private func keep(_ listener: RawUSBRedirListener) { self.listener = listener }

    private func connected(channel: UInt8?, address: String) {
        self.channel = channel
        connections += 1
        self.address = address
        backoff.reset()
        setState(.connected)
    }

    /// Until `retry()` (SIGHUP, a file change, a libvirt lifecycle event of
    /// its domain), or at most `seconds` (a backoff delay also ends early
    /// when the VM is known to have started), or until `condition` (checked
    /// once a second) holds.
    private func waitForRetry(atMost seconds: Double = .infinity,
                              until condition: (@Sendable () -> Bool)? = nil) async {
        let generation = retryGeneration
        let deadline = Date().addingTimeInterval(seconds)
        var ticks = 0
        while retryGeneration == generation && !Task.isCancelled && Date() < deadline {
            ticks += 1
            if let condition, ticks.isMultiple(of: 10), condition() {
                logger.info("the other client left: linking again")
                return
            }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
    }

    /// A domain that is down is looked at again this often even without an
    /// event (a lost libvirt connection delivers none): the backoff cap.
    static let domainRecheckSeconds = Backoff.capSeconds
}
