#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NIOCore
import Reconciler
import Testing
import TestSupport
import USBRedirProtocol

/// Stopping never hangs on a peer (issue 10, finding 4): SIGTERM while a
/// VM has stopped reading still closes the device and exits 0 promptly.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ShutdownTests {
    let usbredir = builtProduct("usbredir")

    @Test func sigtermExitsPromptlyWhenThePeerHasStoppedReading() async throws {
        let dir = try makeTemporaryDirectory("usbredir-shutdown")
        let port = freeLoopbackPort()
        let profile = dir.appendingPathComponent("lab.yaml")
        try """
            version: 1
            endpoints:
              bench: {listen: 127.0.0.1:\(port)}
            devices:
              - {name: gadget, to: bench, virtual: {kind: source-sink}}
            """.write(to: profile, atomically: true, encoding: .utf8)
        let socket = dir.appendingPathComponent("s.sock").path
        let apply = try BackgroundProcess(usbredir, ["apply", "--socket", socket, profile.path],
                                          logFile: dir.appendingPathComponent("apply.log"))
        defer { apply.signal(SIGKILL) }
        let peer = try await connectWhenListening(port: port, apply)
        defer { close(peer) }
        try stallingGuest(peer)
        // Wait until the host has produced MiBs (its writes block after a
        // few, well before 400 x 64 KiB).
        try await waitFor("the host to serve bulk INs", timeout: 30) { status(socket)?.bytesIn ?? 0 > 2 << 20 }

        let start = Date()
        apply.signal(SIGTERM)
        let exit = await apply.waitForExit(timeout: 20)
        let seconds = Date().timeIntervalSince(start)
        print("SIGTERM with a stalled peer: exit \(exit.map(String.init) ?? "none") after \(String(format: "%.2f", seconds)) s")
        #expect(exit == 0, "apply did not exit cleanly:\n\(apply.log)")
        #expect(seconds < 5, "architecture.md: every network step has a deadline; took \(seconds) s")
    }

    /// Stops go through swift-service-lifecycle's ServiceGroup in order:
    /// while the devices are disconnected (a peer that stopped reading holds
    /// the disconnect write for up to a second) the status socket and
    /// /metrics, stopped after the reconcile loop, still answer. A second
    /// SIGTERM then closes every device at once and exits 1.
    @Test func aStopIsOrderedAndASecondSIGTERMStopsAtOnceWith1() async throws {
        let metricsPort = freeLoopbackPort()
        let apply = try ListenApply.start("usbredir-shutdown-order", arguments: ["--metrics", "127.0.0.1:\(metricsPort)"])
        defer { apply.process.signal(SIGKILL) }
        let peer = try await apply.connectAsVM()
        defer { close(peer) }
        try stallingGuest(peer, acks: true)
        try await waitFor("the host to serve bulk INs", timeout: 30) { status(apply.socket)?.bytesIn ?? 0 > 2 << 20 }

        apply.process.signal(SIGTERM)
        try await waitFor("the stop to begin", timeout: 10) { apply.process.log.contains("stopping: disconnecting") }
        let answered = await StatusClient.query(apply.socket)
        let scraped = Metrics.scrape(port: metricsPort)
        #expect(answered != nil, "the status socket closed before the devices were disconnected:\n\(apply.process.log)")
        #expect(scraped != nil, "/metrics closed before the devices were disconnected:\n\(apply.process.log)")

        let start = Date()
        apply.process.signal(SIGTERM)
        let exit = await apply.process.waitForExit(timeout: 10)
        let seconds = Date().timeIntervalSince(start)
        print("second SIGTERM: exit \(exit.map(String.init) ?? "none") after \(String(format: "%.2f", seconds)) s")
        #expect(exit == 1, "apply:\n\(apply.process.log)")
        #expect(seconds < 3)
        #expect(apply.process.log.contains("stopping at once"))
    }

    /// A usb-guest that asks for far more than the socket buffers hold and
    /// never reads: the host's writes block. With `acks` it claims
    /// device_disconnect_ack and never sends one, so a stop waits its
    /// bounded second for it.
    /// An assignment taken out of the profile while apply runs ends its
    /// connection: the VM sees it close at once, rather than a connection
    /// left open with no device behind it (the session's loop used to wait
    /// for the peer to close, and the runner gave up on it after 2 s).
    @Test func removingAnAssignmentClosesItsConnectionAtOnce() async throws {
        let apply = try ListenApply.start("usbredir-remove-closes")
        defer { apply.process.signal(SIGKILL) }
        let peer = try await apply.connectAsVM()
        defer { close(peer) }
        try helloOnly(peer)
        try await waitFor("the session to connect", timeout: 20) { status(apply.socket)?.state == .connected }
        let closed = ConnectionEnd(peer)
        let edited = Date()
        try "version: 1\nendpoints:\n  e: {listen: 127.0.0.1:\(apply.port)}\ndevices: []\n"
            .write(to: apply.profile, atomically: true, encoding: .utf8)
        try await waitFor("the VM's connection to close", timeout: 10) { closed.seen }
        let seconds = Date().timeIntervalSince(edited)
        print("assignment removed: its connection closed after \(String(format: "%.2f", seconds)) s")
        #expect(seconds < 1.9, "the connection outlived the runner's stop (2 s): closed after \(seconds) s")
        #expect(!apply.process.log.contains("did not end"), "\(apply.process.log)")
    }

    /// A VM that says hello and then reads whatever comes.
    func helloOnly(_ peer: Int32) throws {
        var bytes = ByteBuffer()
        let negotiation = USBRedirNegotiation(role: .guest, ours: .none)
        try bytes.writeUSBRedirPacket(USBRedirPacket(id: 0, .hello(.init(version: "test peer", capabilities: .none))),
                                      negotiation: negotiation)
        let hello = Array(bytes.readableBytesView)
        #expect(hello.withUnsafeBytes { send(peer, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == hello.count)
    }

    func stallingGuest(_ peer: Int32, acks: Bool = false) throws {
        var bytes = ByteBuffer()
        let caps = acks ? USBRedirCapabilities([.deviceDisconnectAck]) : .none
        let negotiation = USBRedirNegotiation(role: .guest, ours: caps)
        try bytes.writeUSBRedirPacket(USBRedirPacket(id: 0, .hello(.init(version: "stalled test peer", capabilities: caps))),
                                      negotiation: negotiation)
        for id in 1...400 {
            try bytes.writeUSBRedirPacket(USBRedirPacket(id: UInt64(id), .bulkPacket(
                .init(endpoint: 0x81, status: 0, length: 65535, streamID: 0))), negotiation: negotiation)
        }
        let request = Array(bytes.readableBytesView)
        #expect(request.withUnsafeBytes { send(peer, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == request.count)
    }

    func status(_ socket: String) -> AssignmentStatus? {
        let out = try? runCommand(usbredir, ["status", "--json", "--socket", socket])
        guard let out, let report = try? JSONDecoder().decode(StatusReport.self, from: Data(out.utf8)) else { return nil }
        return report.sessions.first
    }

    func connectWhenListening(port: Int, _ apply: BackgroundProcess) async throws -> Int32 {
        var fd: Int32 = -1
        try await waitFor("apply to listen on \(port)", timeout: 20) {
            fd = (try? connectLoopback(port: port)) ?? -1
            return fd >= 0
        }
        return fd
    }
}

/// Reads a socket on a thread of its own until the peer closes it.
final class ConnectionEnd: @unchecked Sendable {
    private let lock = NSLock()
    private var ended = false
    var seen: Bool { lock.withLock { ended } }

    init(_ fd: Int32) {
        Thread.detachNewThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while buffer.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}
            lock.withLock { ended = true }
        }
    }
}
