#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Reconciler
import Testing
import TestSupport

/// The status socket (issue 10, finding 11): owner-only, idle clients
/// dropped, and a second apply does not steal it.
@Suite(.serialized, .timeLimit(.minutes(2))) struct StatusSocketTests {
    let usbredir = builtProduct("usbredir")

    func startApply() throws -> (BackgroundProcess, profile: URL, socket: String) {
        let lab = try ListenApply.start("usbredir-socket", socketName: "sub/s.sock")
        return (lab.process, lab.profile, lab.socket)
    }

    func answers(_ socket: String) -> Bool {
        (try? runCommandStatus(usbredir, ["status", "--json", "--socket", socket]).status) == 0
    }

    @Test func theSocketAndItsFolderAreOwnerOnly() async throws {
        let (apply, _, socket) = try startApply()
        defer { apply.signal(SIGKILL) }
        try await waitFor("the status socket", timeout: 20) { answers(socket) }
        var info = stat()
        #expect(stat(socket, &info) == 0)
        #expect(info.st_mode & 0o077 == 0, "socket mode \(String(info.st_mode & 0o777, radix: 8))")
        #expect(stat((socket as NSString).deletingLastPathComponent, &info) == 0)
        #expect(info.st_mode & 0o077 == 0, "folder mode \(String(info.st_mode & 0o777, radix: 8))")
    }

    @Test func aSecondApplyOnTheSameSocketIsRefusedAndTheFirstKeepsIt() async throws {
        let (first, profile, socket) = try startApply()
        defer { first.signal(SIGKILL) }
        try await waitFor("the first apply's socket", timeout: 20) { answers(socket) }
        let second = try BackgroundProcess(usbredir, ["apply", "--socket", socket, profile.path],
                                           logFile: profile.deletingLastPathComponent().appendingPathComponent("second.log"))
        defer { second.signal(SIGKILL) }
        #expect(await second.waitForExit(timeout: 20) == 1)
        #expect(second.log.contains("another apply already answers on \(socket)"), "\(second.log)")
        #expect(answers(socket), "the first apply lost its socket")
    }

    @Test func anIdleClientIsDropped() async throws {
        let (apply, _, socket) = try startApply()
        defer { apply.signal(SIGKILL) }
        try await waitFor("the status socket", timeout: 20) { answers(socket) }
        let fd = socket.withCString { path -> Int32 in
            let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { strncpy($0.baseAddress!.assumingMemoryBound(to: CChar.self), path, $0.count - 1) }
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            return rc == 0 ? fd : -1
        }
        try #require(fd >= 0)
        defer { close(fd) }
        // Say nothing; the server must close within its idle timeout (5 s).
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let start = Date()
        #expect(poll(&p, 1, 15_000) == 1, "still open after 15 s")
        var byte: UInt8 = 0
        #expect(recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) == 0)
        print("idle status client dropped after \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }
}

/// `allow:` (issue 10, finding 6): a listen endpoint closes a peer from an
/// address it does not list, and keeps one it does.
@Suite(.serialized, .timeLimit(.minutes(1))) struct ListenAllowTests {
    let usbredir = builtProduct("usbredir")

    func peerIsClosed(allow: String) async throws -> Bool {
        let lab = try ListenApply.start("usbredir-allow", endpoint: "allow: [\(allow)]")
        defer { lab.process.signal(SIGKILL) }
        let fd = try await lab.connectAsVM()
        defer { close(fd) }
        // The host sends nothing before our hello: readable means closed.
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 2_000) == 1
    }

    @Test func aPeerNotInAllowIsClosedAndOneInItIsKept() async throws {
        #expect(try await peerIsClosed(allow: "192.0.2.10"))
        #expect(try await !peerIsClosed(allow: "127.0.0.1"))
    }
}
