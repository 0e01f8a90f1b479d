import Foundation
import Reconciler
import Testing
import TestSupport

/// `libvirt:` endpoints against a libvirtd the test starts itself (as root,
/// no systemd): transient TCG domains booting the test guest, qemu-xhci,
/// SPICE with a password (autoport, or a unix socket), two spicevmc redirdevs.
@Suite(.serialized, .requires(.qemu), .requires(.libvirt), .timeLimit(.minutes(10)))
struct LibvirtApplyTests {
    static let watch = "usbtest=watch usbtest.readloop=1 usbtest.mib=8 usbtest.wait=300"
    static let stickSize = "size=8388608"

    struct Lab {
        let dir: URL
        let profile: URL
        let socket: String
        let image: String

        init() throws {
            dir = try makeTemporaryDirectory("usbredir-libvirt")
            profile = dir.appendingPathComponent("lab.yaml")
            socket = dir.appendingPathComponent("s.sock").path
            image = try makeRandomImage(mib: 8, in: dir)
        }

        func write(to endpoint: String, domains: [String]) throws {
            var text = "version: 1\nlog: debug\nendpoints:\n"
            for (i, d) in domains.enumerated() { text += "  vm-\(i): {libvirt: \(d)}\n" }
            text += "devices:\n  - {name: stick, to: \(endpoint), virtual: {kind: mass-storage, image: \(image), read-only: true}}\n"
            // As editors do: write aside, rename over.
            let tmp = dir.appendingPathComponent(".lab.yaml.tmp")
            try text.write(to: tmp, atomically: false, encoding: .utf8)
            guard rename(tmp.path, profile.path) == 0 else { throw CocoaError(.fileWriteUnknown) }
        }

        func apply() throws -> BackgroundProcess {
            try BackgroundProcess(builtProduct("usbredir"), ["apply", "--socket", socket, profile.path],
                                  logFile: dir.appendingPathComponent("apply.log"))
        }

        func stick() throws -> AssignmentStatus? {
            let out = try runCommand(builtProduct("usbredir"), ["status", "--json", "--socket", socket])
            return try JSONDecoder().decode(StatusReport.self, from: Data(out.utf8)).sessions.first
        }
    }

    static func name(_ role: String) -> String { "usbredir-\(role)-\(UUID().uuidString.prefix(6))" }

    /// The time of the first log line at or after `date` that contains
    /// `message` (lines start with an RFC 3339 time in milliseconds).
    static func loggedAt(_ message: String, in log: String, after date: Date) -> Date? {
        let format = ISO8601DateFormatter()
        format.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for line in log.split(separator: "\n") where line.contains(message) {
            guard let stamp = line.split(separator: " ").first, let time = format.date(from: String(stamp)),
                  time >= date.addingTimeInterval(-0.001) else { continue }
            return time
        }
        return nil
    }

    /// Served by name with autoport; destroyed, the domain is a state, not
    /// an error loop; created again (a new port), the session is back within
    /// 2 s of the domain starting, without SIGHUP, and the guest reads again.
    @Test func aDomainIsServedByNameAndAgainAfterItIsCreatedAgain() async throws {
        let libvirt = try Libvirtd()
        defer { libvirt.stop() }
        let lab = try Lab()
        let domain = TestDomain(name: Self.name("a"), append: Self.watch, in: lab.dir)
        try libvirt.create(domain)
        try lab.write(to: "vm-0", domains: [domain.name])
        let apply = try lab.apply()
        defer { apply.signal(SIGKILL) }

        try await waitFor("the guest to see the stick", timeout: 90) { domain.serial.contains(Self.stickSize) }
        let first = try #require(try lab.stick())
        #expect(first.state == .connected && first.address?.hasPrefix("127.0.0.1:") == true, "\(first)")
        let plan = try runCommand(builtProduct("usbredir"), ["plan", "--socket", lab.socket, lab.profile.path])
        #expect(plan.contains("endpoint vm-0 (libvirt domain \(domain.name) on qemu:///system -> \(first.address ?? "?"))"), "\(plan)")

        let destroyed = Date()
        try libvirt.destroy(domain.name)
        try await waitFor("status to show the domain down", timeout: 15) {
            let s = try lab.stick()
            return s?.state == .waitingForVM && s?.lastError == "domain \(domain.name) does not exist"
        }
        let logLines = apply.log.split(separator: "\n").count
        // An observation window, not a synchronisation: longer than the
        // 10 s re-check of a domain that is down, which must stay silent.
        try await Task.sleep(nanoseconds: 11_000_000_000)
        let quiet = apply.log.split(separator: "\n").dropFirst(logLines)
        #expect(!quiet.contains { $0.contains("session ") }, "no retry loop:\n\(quiet.joined(separator: "\n"))")

        // Another domain takes the freed SPICE port, so this one comes back
        // on a new one, as after a host reboot.
        try libvirt.create(TestDomain(name: Self.name("filler"), append: "usbtest=watch usbtest.wait=120", in: lab.dir))
        try libvirt.create(domain)
        let created = Date()
        let polled = await waitUntil(timeout: 20, interval: 0.02) { (try? lab.stick())?.state == .connected }
        let connected = try #require(try lab.stick())
        // By the apply's own clock: its log line's time, not when a status
        // poll (a process started per poll) happened to see it. (Negative
        // when it connected before virsh returned.)
        let seconds = Self.loggedAt("session connected", in: apply.log, after: destroyed)?.timeIntervalSince(created)
        print("LIBVIRT restart: connected \(String(format: "%.2f", seconds ?? -1)) s after virsh create returned "
              + "(status showed it after \(String(format: "%.2f", polled ?? -1)) s); "
              + "address \(first.address ?? "?") -> \(connected.address ?? "?")")
        #expect((seconds ?? 99) < 2, "apply:\n\(apply.log.suffix(4000))")
        #expect(polled != nil, "status never showed it connected: \(connected)")
        #expect(connected.address != first.address, "a new port: \(connected)")
        try await waitFor("the restarted guest to see the stick", timeout: 90) { domain.serial.contains(Self.stickSize) }
        #expect(await waitUntil(timeout: 30) { domain.serial.contains("read-pass") } != nil, "\(GuestReport(serial: domain.serial))")
    }

    /// An edit that points the assignment at another domain (this one on a
    /// SPICE unix socket) moves the stick there.
    @Test func anEditPointingAtAnotherDomainMovesTheStick() async throws {
        let libvirt = try Libvirtd()
        defer { libvirt.stop() }
        let lab = try Lab()
        let a = TestDomain(name: Self.name("a"), append: Self.watch, in: lab.dir)
        var b = TestDomain(name: Self.name("b"), append: Self.watch, in: lab.dir)
        b.spiceSocket = lab.dir.appendingPathComponent("b-spice.sock").path
        try libvirt.create(a)
        try libvirt.create(b)
        try lab.write(to: "vm-0", domains: [a.name, b.name])
        let apply = try lab.apply()
        defer { apply.signal(SIGKILL) }
        try await waitFor("domain a's guest to see the stick", timeout: 90) { a.serial.contains(Self.stickSize) }

        try lab.write(to: "vm-1", domains: [a.name, b.name])
        try await waitFor("domain b's guest to see the stick", timeout: 90) { b.serial.contains(Self.stickSize) }
        #expect(await waitUntil(timeout: 20) { a.serial.contains("USBTEST disk-removed") } != nil,
                "domain a keeps the stick:\n\(GuestReport(serial: a.serial))")
        let moved = try #require(try lab.stick())
        #expect(moved.endpoint == "vm-1" && moved.address == "unix:\(b.spiceSocket!)", "\(moved)")
    }

    /// `attach ... --to libvirt://NAME`: the guest hashes the stick, SIGINT
    /// exits 0; a domain libvirt does not know exits 1 with the message.
    @Test func attachServesAStickByDomainName() async throws {
        let libvirt = try Libvirtd()
        defer { libvirt.stop() }
        let lab = try Lab()
        let domain = TestDomain(name: Self.name("attach"), append: "usbtest=shell usbtest.mib=8", in: lab.dir)
        try libvirt.create(domain)
        let attach = try BackgroundProcess(builtProduct("usbredir"),
                                           ["attach", "image:\(lab.image),ro", "--to", "libvirt://\(domain.name)",
                                            "--socket", lab.socket], logFile: lab.dir.appendingPathComponent("attach.log"))
        defer { attach.signal(SIGKILL) }
        // The whole result line (the console writes it in pieces).
        try await waitFor("the guest to hash the stick", timeout: 90) {
            GuestReport(serial: domain.serial).line("sha256=")?.contains(" bytes=") == true
        }
        #expect(GuestReport(serial: domain.serial).value("sha256") == (try sha256(ofFile: lab.image)),
                "guest:\n\(GuestReport(serial: domain.serial))")
        #expect(attach.log.contains("connected channel 0"), "attach:\n\(attach.log)")
        attach.signal(SIGINT)
        #expect(await attach.waitForExit(timeout: 10) == 0, "attach:\n\(attach.log)")

        let wrong = try BackgroundProcess(builtProduct("usbredir"),
                                          ["attach", "image:\(lab.image),ro", "--to", "libvirt://no-such-domain",
                                           "--socket", lab.socket + "2"], logFile: lab.dir.appendingPathComponent("wrong.log"))
        defer { wrong.signal(SIGKILL) }
        #expect(await wrong.waitForExit(timeout: 10) == 1)
        #expect(wrong.log.contains("usbredir attach: domain 'no-such-domain' does not exist on qemu:///system"), "\(wrong.log)")
    }

    /// validate: a domain that does not exist is a warning; so is a libvirt
    /// that cannot be reached, saying nothing was checked.
    @Test func validateWarnsAboutAMissingDomain() async throws {
        let libvirt = try Libvirtd()
        defer { libvirt.stop() }
        let lab = try Lab()
        try lab.write(to: "vm-0", domains: ["no-such-domain"])
        let out = try runCommand(builtProduct("usbredir"), ["validate", lab.profile.path])
        #expect(out.contains("warning: domain 'no-such-domain' does not exist on qemu:///system"), "\(out)")
        let text = try String(contentsOf: lab.profile, encoding: .utf8)
            .replacingOccurrences(of: "{libvirt: no-such-domain}",
                                  with: "{libvirt: x, uri: \"qemu+unix:///system?socket=/nonexistent/sock\"}")
        try text.write(to: lab.profile, atomically: true, encoding: .utf8)
        let unreachable = try runCommand(builtProduct("usbredir"), ["validate", lab.profile.path])
        #expect(unreachable.contains("warning: cannot check domain 'x': libvirt at qemu+unix:///system?socket=/nonexistent/sock is not reachable"),
                "\(unreachable)")
    }
}
