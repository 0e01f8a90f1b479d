#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Reconciler
import Testing
import TestSupport

/// Issue 10, "Prove it" 3: a profile edited 100 times in 10 s leaks no
/// sessions, file descriptors or threads (counted in /proc).
@Suite(.serialized, .timeLimit(.minutes(3))) struct EditChurnTests {
    let usbredir = builtProduct("usbredir")

    func count(_ pid: Int32, _ what: String) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/\(what)").count) ?? -1
    }

    func sessions(_ socket: String) -> [AssignmentStatus]? {
        guard let out = try? runCommand(usbredir, ["status", "--json", "--socket", socket]) else { return nil }
        return try? JSONDecoder().decode(StatusReport.self, from: Data(out.utf8)).sessions
    }

    @Test func a100EditsLeakNoSessionsFdsOrThreads() async throws {
        let dir = try makeTemporaryDirectory("usbredir-churn")
        let profile = dir.appendingPathComponent("lab.yaml")
        let ports = (0..<3).map { _ in freeLoopbackPort() }
        func write(_ edit: Int) throws {
            // Every edit changes one assignment (its serial rule) and toggles a third one.
            var text = "version: 1\nendpoints:\n"
            for (i, port) in ports.enumerated() { text += "  e\(i): {listen: 127.0.0.1:\(port)}\n" }
            text += "devices:\n  - {name: a, to: e0, virtual: {kind: source-sink}}\n"
            text += "  - {name: b, to: e1, match: {vendor: 0x1234, serial: \"S\(edit)\"}}\n"
            if edit % 2 == 1 { text += "  - {name: c, to: e2, virtual: {kind: source-sink}}\n" }
            try text.write(to: profile, atomically: true, encoding: .utf8)
        }
        try write(0)
        let socket = dir.appendingPathComponent("s.sock").path
        let apply = try BackgroundProcess(usbredir, ["apply", "--socket", socket, profile.path],
                                          logFile: dir.appendingPathComponent("apply.log"))
        defer { apply.signal(SIGKILL) }
        let pid = apply.process.processIdentifier
        try await waitFor("the first pass", timeout: 20) { sessions(socket)?.count == 2 }
        let fdsBefore = count(pid, "fd"), threadsBefore = count(pid, "task")

        let start = Date()
        for edit in 1...100 {
            try write(edit)
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        print("100 edits in \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        try write(0)
        // Converged on the last edit: two sessions, b with the last serial rule.
        try await waitFor("apply to converge on the last edit", timeout: 30) {
            guard let s = sessions(socket) else { return false }
            return s.map(\.name).sorted() == ["a", "b"]
        }
        // Closing stopped sessions finishes shortly after: wait for the counts
        // to come back (a leak never does), then report them.
        await waitUntil(timeout: 10) {
            count(pid, "fd") <= fdsBefore + 2 && count(pid, "task") <= threadsBefore + 4
        }
        let fdsAfter = count(pid, "fd"), threadsAfter = count(pid, "task")
        print("fds \(fdsBefore) -> \(fdsAfter), threads \(threadsBefore) -> \(threadsAfter)")
        #expect(apply.isAlive, "apply died:\n\(apply.log.suffix(2000))")
        #expect(fdsAfter <= fdsBefore + 2, "file descriptors leaked: \(fdsBefore) -> \(fdsAfter)")
        #expect(threadsAfter <= threadsBefore + 4, "threads leaked: \(threadsBefore) -> \(threadsAfter)")
        apply.signal(SIGTERM)
        #expect(await apply.waitForExit(timeout: 10) == 0)
    }
}
