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
        // A usb-guest that asks for far more than the socket buffers hold,
        // and never reads: the host's writes block.
        var bytes = ByteBuffer()
        let negotiation = USBRedirNegotiation(role: .guest, ours: .none)
        try bytes.writeUSBRedirPacket(USBRedirPacket(id: 0, .hello(.init(version: "stalled test peer", capabilities: .none))),
                                      negotiation: negotiation)
        for id in 1...400 {
            try bytes.writeUSBRedirPacket(USBRedirPacket(id: UInt64(id), .bulkPacket(
                .init(endpoint: 0x81, status: 0, length: 65535, streamID: 0))), negotiation: negotiation)
        }
        let request = Array(bytes.readableBytesView)
        #expect(request.withUnsafeBytes { send(peer, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == request.count)
        // Wait until the host has produced MiBs (its writes block after a
        // few, well before 400 x 64 KiB).
        try await waitFor(timeout: 30, "the host to serve bulk INs") { status(socket)?.bytesIn ?? 0 > 2 << 20 }

        let start = Date()
        apply.signal(SIGTERM)
        let exit = await apply.waitForExit(timeout: 20)
        let seconds = Date().timeIntervalSince(start)
        print("SIGTERM with a stalled peer: exit \(exit.map(String.init) ?? "none") after \(String(format: "%.2f", seconds)) s")
        #expect(exit == 0, "apply did not exit cleanly:\n\(apply.log)")
        #expect(seconds < 5, "design.md: every network step has a deadline; took \(seconds) s")
    }

    func status(_ socket: String) -> AssignmentStatus? {
        let out = try? runCommand(usbredir, ["status", "--json", "--socket", socket])
        guard let out, let report = try? JSONDecoder().decode(StatusReport.self, from: Data(out.utf8)) else { return nil }
        return report.sessions.first
    }

    func connectWhenListening(port: Int, _ apply: BackgroundProcess) async throws -> Int32 {
        var fd: Int32 = -1
        try await waitFor(timeout: 20, "apply to listen on \(port)") {
            fd = (try? connectLoopback(port: port)) ?? -1
            return fd >= 0
        }
        return fd
    }
}

/// Polls `condition` until it holds; fails after `timeout` seconds.
func waitFor(timeout: Double, _ what: String, _ condition: () async -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while !(await condition()) {
        guard Date() < deadline else {
            Issue.record("timed out after \(timeout) s waiting for \(what)")
            throw POSIXError(.ETIMEDOUT)
        }
        try await Task.sleep(nanoseconds: 20_000_000)
    }
}

extension ShutdownTests {
    /// A "SPICE server" that accepts and then says nothing: the link hangs.
    /// SIGTERM must still end apply promptly (the old loop waited on the
    /// handshake's future for ever).
    @Test func sigtermExitsPromptlyDuringASilentSpiceHandshake() async throws {
        let dir = try makeTemporaryDirectory("usbredir-shutdown")
        let (listener, port) = try silentListener()
        defer { close(listener) }
        let profile = dir.appendingPathComponent("lab.yaml")
        try """
            version: 1
            endpoints:
              vm: {spice: 127.0.0.1:\(port)}
            devices:
              - {name: gadget, to: vm, virtual: {kind: source-sink}}
            """.write(to: profile, atomically: true, encoding: .utf8)
        let apply = try BackgroundProcess(usbredir, ["apply", "--socket", dir.appendingPathComponent("s.sock").path, profile.path],
                                          logFile: dir.appendingPathComponent("apply.log"))
        defer { apply.signal(SIGKILL) }
        // The link has started: apply's connection is in the listen queue.
        var accepted: Int32 = -1
        try await waitFor(timeout: 20, "apply to connect") {
            accepted = accept(listener, nil, nil)
            return accepted >= 0
        }
        defer { close(accepted) }
        let start = Date()
        apply.signal(SIGTERM)
        let exit = await apply.waitForExit(timeout: 20)
        let seconds = Date().timeIntervalSince(start)
        print("SIGTERM during a silent SPICE link: exit \(exit.map(String.init) ?? "none") after \(String(format: "%.2f", seconds)) s")
        #expect(exit == 0, "apply did not exit cleanly:\n\(apply.log)")
    }

    /// A non-blocking listening socket on a free loopback port.
    func silentListener() throws -> (Int32, Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && listen(fd, 8) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else { close(fd); throw POSIXError(.EADDRINUSE) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return (fd, Int(UInt16(bigEndian: addr.sin_port)))
    }
}
