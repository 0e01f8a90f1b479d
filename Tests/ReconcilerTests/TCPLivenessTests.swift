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

    @Test func anAcceptedUsbredirConnectionHasKeepaliveArmed() async throws {
        let lab = try ListenApply.start("usbredir-keepalive")
        defer { lab.process.signal(SIGKILL) }
        let fd = try await lab.connectAsVM()
        let port = lab.port
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
