#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport

/// Issue 10, finding 7: connections carry TCP keepalive (and a user
/// timeout), so a partitioned peer is noticed in bounded time. Checked on
/// the real socket of a running apply, as the kernel shows it (ss).
@Suite(.serialized, .timeLimit(.minutes(1))) struct TCPLivenessTests {
    let usbredir = builtProduct("usbredir")

    @Test func anAcceptedUsbredirConnectionHasKeepaliveArmed() async throws {
        let dir = try makeTemporaryDirectory("usbredir-keepalive")
        let port = freeLoopbackPort()
        let profile = dir.appendingPathComponent("lab.yaml")
        try "version: 1\nendpoints:\n  e: {listen: 127.0.0.1:\(port)}\ndevices:\n  - {name: g, to: e, virtual: {kind: source-sink}}\n"
            .write(to: profile, atomically: true, encoding: .utf8)
        let apply = try BackgroundProcess(usbredir, ["apply", "--socket", dir.appendingPathComponent("s.sock").path, profile.path],
                                          logFile: dir.appendingPathComponent("apply.log"))
        defer { apply.signal(SIGKILL) }
        var fd: Int32 = -1
        try await waitFor("the listener", timeout: 20) {
            fd = (try? connectLoopback(port: port)) ?? -1
            return fd >= 0
        }
        defer { close(fd) }
        // apply's end of the connection: source port = the listen port.
        var line = ""
        try await waitFor("apply's socket in ss", timeout: 10) {
            line = (try? runCommand("/usr/bin/ss", ["-tnoH", "state", "established", "( sport = :\(port) )"])) ?? ""
            return !line.isEmpty
        }
        print("apply's socket: \(line.trimmingCharacters(in: .whitespacesAndNewlines))")
        #expect(line.contains("timer:(keepalive,"), "no keepalive timer: \(line)")
    }
}
