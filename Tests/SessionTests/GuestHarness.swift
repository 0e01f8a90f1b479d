import Common
import Devices
import Foundation
import Logging
import Session
import Testing
import TestSupport
import Transport

let testLogger: Logger = {
    var l = Logger(label: "usbredir.test")
    l.logLevel = ProcessInfo.processInfo.environment["USBREDIR_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
    return l
}()

enum GuestLink {
    case spice(controller: String)
    /// QEMU listens (chardev socket server); the tool connects.
    case raw(controller: String)
}

/// Boots the test guest with one usb-redir port served by `session`, runs
/// `during` while the guest runs, and returns the guest's report once it
/// powered off (or the timeout passed).
func runGuest(append: String, link: GuestLink, session: RedirectionSession, timeout: Double = 150,
              during: @escaping @Sendable (QEMUVM) async throws -> Void = { _ in }) async throws -> (GuestReport, QEMUVM) {
    var o = try Guest.options(append: append)
    let serve: @Sendable () async throws -> Void
    switch link {
    case .spice(let controller):
        o.controller = controller
        o.spicePort = freeLoopbackPort()
        o.usbredirChannels = 1
        let config = SpiceEndpointConfiguration(address: .init(host: "127.0.0.1", port: o.spicePort!))
        serve = {
            let spice = try await SpiceSession.connect(config, logger: testLogger)
            defer { spice.close() }
            _ = try await spice.withUSBRedirChannel(0) { connection, _ in await session.run(connection) }
        }
    case .raw(let controller):
        o.controller = controller
        o.redirListenPort = freeLoopbackPort()
        let address = HostPort(host: "127.0.0.1", port: o.redirListenPort!)
        serve = { _ = try await RawUSBRedir.withConnection(to: address) { await session.run($0) } }
    }
    let vm = try QEMUVM(o)
    let server = Task { try await serve() }
    defer { server.cancel(); vm.stop() }
    try await during(vm)
    let finished = await vm.exited(within: timeout)
    let report = GuestReport(serial: vm.serial)
    if !finished { Issue.record("guest did not power off within \(timeout) s; it printed:\n\(report)") }
    return (report, vm)
}
