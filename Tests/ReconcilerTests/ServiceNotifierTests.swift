#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Reconciler
import Testing
import TestSupport

/// What systemd does for Type=notify: a unix datagram socket the service
/// writes to. Binds a path, or an abstract name when it starts with '@'.
final class NotifySocket {
    let fd: Int32
    let address: String

    init(_ address: String) throws {
        self.address = address
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var path = Array(address.utf8)
        let abstract = path.first == UInt8(ascii: "@")
        if abstract { path[0] = 0 }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: path) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (abstract ? 0 : 1))
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard fd >= 0, rc == 0 else { throw BindFailed(address: address, reason: String(cString: strerror(errno))) }
    }

    /// The next datagram, or nil after `timeout` seconds.
    func receive(timeout: Double) -> String? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(timeout * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n < 0 ? nil : String(decoding: buffer[..<n], as: UTF8.self)
    }

    /// Datagrams until one contains `text` (all of them, in order), or nil.
    func receive(until text: String, timeout: Double) -> [String]? {
        let deadline = Date().addingTimeInterval(timeout)
        var all: [String] = []
        while let m = receive(timeout: max(0, deadline.timeIntervalSinceNow)) {
            all.append(m)
            if m.contains(text) { return all }
        }
        return nil
    }

    deinit {
        close(fd)
        if !address.hasPrefix("@") { unlink(address) }
    }
}

struct BindFailed: Error {
    var address: String
    var reason: String
}

/// sd_notify without libsystemd (issue 11).
@Suite(.serialized, .timeLimit(.minutes(2))) struct ServiceNotifierTests {
    let usbredir = builtProduct("usbredir")

    @Test func anAbstractNameIsReachedAndStatusIsSentOnlyWhenItChanges() throws {
        let name = "@usbredir-test-\(UUID().uuidString.prefix(8))"
        let socket = try NotifySocket(name)
        let notifier = ServiceNotifier(environment: ["NOTIFY_SOCKET": name])
        #expect(notifier.isEnabled)
        notifier.ready(status: "0 sessions connected, 1 waiting")
        #expect(socket.receive(timeout: 5) == "READY=1\nSTATUS=0 sessions connected, 1 waiting")
        notifier.status("0 sessions connected, 1 waiting")   // unchanged: nothing sent
        notifier.status("1 session connected, 0 waiting")
        #expect(socket.receive(timeout: 5) == "STATUS=1 session connected, 0 waiting")
        #expect(socket.receive(timeout: 0.2) == nil)
        #expect(!ServiceNotifier(environment: [:]).send("READY=1"))
    }

    @Test func summaryCountsConnectedAndWaitingSessions() {
        #expect(ServiceNotifier.summary([.connected, .backoff, .waitingForDevice]) == "1 session connected, 2 waiting")
        #expect(ServiceNotifier.summary([AssignmentState]()) == "0 sessions connected, 0 waiting")
    }

    /// apply under Type=notify: READY=1 once the first pass is done (the
    /// status socket answers by then), a STATUS= line, STOPPING=1 on SIGTERM.
    @Test func applySendsReadyAfterTheFirstPassThenStatusAndStopping() async throws {
        let dir = try makeTemporaryDirectory("usbredir-notify")
        let profile = dir.appendingPathComponent("lab.yaml")
        try "version: 1\nendpoints:\n  e: {listen: 127.0.0.1:\(freeLoopbackPort())}\ndevices:\n  - {name: g, to: e, virtual: {kind: source-sink}}\n"
            .write(to: profile, atomically: true, encoding: .utf8)
        let notify = try NotifySocket(dir.appendingPathComponent("notify").path)
        let statusSocket = dir.appendingPathComponent("s.sock").path
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notify.address
        let apply = try BackgroundProcess(usbredir, ["apply", "--socket", statusSocket, profile.path],
                                          logFile: dir.appendingPathComponent("apply.log"), environment: environment)
        defer { apply.signal(SIGKILL) }
        let ready = try #require(notify.receive(until: "READY=1", timeout: 30), "no READY=1; apply:\n\(apply.log)")
        #expect(ready.last?.contains("STATUS=0 sessions connected, 1 waiting") == true, "\(ready)")
        // Ready means served: the status socket answers at once.
        #expect(try runCommandStatus(usbredir, ["status", "--json", "--socket", statusSocket]).status == 0)
        apply.signal(SIGTERM)
        #expect(notify.receive(until: "STOPPING=1", timeout: 10) != nil, "no STOPPING=1; apply:\n\(apply.log)")
        #expect(await apply.waitForExit(timeout: 10) == 0)
    }
}
