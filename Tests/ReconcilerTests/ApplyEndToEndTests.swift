import Common
import Foundation
import Logging
import Reconciler
import Transport
import Testing
import TestSupport

/// `usbredir apply` as a process against real QEMU guests: edits of the
/// profile file, an invalid profile, a VM restart, and status while the
/// guest reads.
@Suite(.serialized, .requires(.qemu), .timeLimit(.minutes(10)))
struct ApplyEndToEndTests {
    struct Lab {
        let dir: URL
        let profile: URL
        let socket: String
        let vm1Port: Int
        let vm2Port: Int
    }

    static func makeLab() throws -> Lab {
        let dir = try makeTemporaryDirectory("usbredir-apply")
        // Different sizes tell the sticks apart inside the guest.
        _ = try makeRandomImage(mib: 8, in: dir, name: "a.img")
        _ = try makeRandomImage(mib: 12, in: dir, name: "b.img")
        _ = try makeRandomImage(mib: 10, in: dir, name: "c.img")
        return Lab(dir: dir, profile: dir.appendingPathComponent("lab.yaml"),
                   socket: dir.appendingPathComponent("status.sock").path,
                   vm1Port: freeLoopbackPort(), vm2Port: freeLoopbackPort())
    }

    static func profile(_ lab: Lab, sticks: [(name: String, image: String, vm: String)]) -> String {
        var text = """
            version: 1
            log: debug
            endpoints:
              vm1:
                spice: 127.0.0.1:\(lab.vm1Port)
              vm2:
                spice: 127.0.0.1:\(lab.vm2Port)
            devices:

            """
        for s in sticks {
            text += """
                  - name: \(s.name)
                    to: \(s.vm)
                    virtual:
                      kind: mass-storage
                      image: \(s.image)
                      read-only: true

                """
        }
        return text
    }

    /// Replaces the file the way editors do: write a temporary file, rename it over.
    static func write(_ text: String, to url: URL) throws {
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp")
        try text.write(to: tmp, atomically: false, encoding: .utf8)
        guard rename(tmp.path, url.path) == 0 else { throw CocoaError(.fileWriteUnknown) }
    }

    static func status(_ lab: Lab) throws -> [AssignmentStatus] {
        let out = try runCommand(builtProduct("usbredir"), ["status", "--json", "--socket", lab.socket])
        return try JSONDecoder().decode(StatusReport.self, from: Data(out.utf8)).sessions
    }

    static func watchVM(port: Int, channels: Int, password: String? = nil) throws -> QEMUVM {
        var o = try Guest.options(append: "usbtest=watch usbtest.readloop=1 usbtest.mib=8 usbtest.wait=300")
        o.spicePort = port
        o.spicePassword = password
        o.usbredirChannels = channels
        return try QEMUVM(o)
    }

    /// One stick (stick-c) on vm2, applied and seen by vm2's guest.
    static func applyOneStickOnVM2() async throws -> (Lab, QEMUVM, BackgroundProcess) {
        let lab = try makeLab()
        try write(profile(lab, sticks: [("stick-c", "c.img", "vm2")]), to: lab.profile)
        let vm = try watchVM(port: lab.vm2Port, channels: 1)
        let apply = try BackgroundProcess(builtProduct("usbredir"), ["apply", "--socket", lab.socket, lab.profile.path],
                                          logFile: lab.dir.appendingPathComponent("apply.log"))
        #expect(await vm.serialContains("size=10485760", within: 60), "apply:\n\(apply.log)")
        return (lab, vm, apply)
    }

    @Test func editsTouchOnlyWhatChangedAndInvalidProfilesChangeNothing() async throws {
        let lab = try Self.makeLab()
        try Self.write(Self.profile(lab, sticks: [("stick-a", "a.img", "vm1"), ("stick-b", "b.img", "vm1")]), to: lab.profile)
        let vm1 = try Self.watchVM(port: lab.vm1Port, channels: 2)
        let vm2 = try Self.watchVM(port: lab.vm2Port, channels: 1)
        defer { vm1.stop(); vm2.stop() }
        let apply = try BackgroundProcess(builtProduct("usbredir"), ["apply", "--socket", lab.socket, lab.profile.path],
                                          logFile: lab.dir.appendingPathComponent("apply.log"))
        defer { apply.signal(SIGKILL) }

        // Both sticks reach vm1's guest, each read in a loop.
        let bothUp = await vm1.serialContains("size=12582912", within: 60)
        #expect(bothUp, "vm1 guest:\n\(GuestReport(serial: vm1.serial))\napply:\n\(apply.log)")
        #expect(await vm1.serialContains("read-pass", within: 30))
        let before = try Self.status(lab)
        let a0 = try #require(before.first { $0.name == "stick-a" })
        #expect(before.map(\.channel).compactMap { $0 }.sorted() == [0, 1])

        // status during a transfer: byte counts grow.
        try await Task.sleep(nanoseconds: 1_000_000_000)
        let a1 = try #require(try Self.status(lab).first { $0.name == "stick-a" })
        #expect(a1.bytesIn > a0.bytesIn, "bytes_in \(a0.bytesIn) -> \(a1.bytesIn)")

        // Edit: remove stick-b, add stick-c on vm2.
        let edited = Date()
        try Self.write(Self.profile(lab, sticks: [("stick-a", "a.img", "vm1"), ("stick-c", "c.img", "vm2")]), to: lab.profile)
        let applied = try await waitUntil(timeout: 20, interval: 0.05) {
            let s = try Self.status(lab)
            return s.contains { $0.name == "stick-c" && $0.state == .connected } && !s.contains { $0.name == "stick-b" }
        }
        #expect(applied != nil, "apply:\n\(apply.log)")
        let inGuest = await vm2.serialContains("size=10485760", within: 30)
        let guestSeconds = Date().timeIntervalSince(edited)
        #expect(inGuest, "vm2 guest:\n\(GuestReport(serial: vm2.serial))")
        // The disk that goes is stick-b's (12 MiB), not stick-a's.
        let vm1Added = GuestReport(serial: vm1.serial).lines.filter { $0.hasPrefix("disk-added") }
        let diskB = try #require(vm1Added.first { $0.hasSuffix("size=12582912") }?.split(separator: " ")[1],
                                 "stick-b's disk in vm1: \(vm1Added)")
        let removedB = await waitUntil(timeout: 10, interval: 0.05) {
            GuestReport(serial: vm1.serial).lines.contains("disk-removed \(diskB)")
        }
        #expect(removedB != nil, "vm1 guest:\n\(GuestReport(serial: vm1.serial))")
        // A figure; the bound (10x what it takes) only catches an edit that was not applied promptly.
        print("APPLY edit took effect in \(String(format: "%.2f", applied ?? -1)) s (status); vm2's guest saw stick-c after \(String(format: "%.2f", guestSeconds)) s")
        #expect((applied ?? 99) < 20)

        // stick-a was never touched: same session (since), still reading, no read error on it.
        let a2 = try #require(try Self.status(lab).first { $0.name == "stick-a" })
        #expect(a2.since == a0.since && a2.state == .connected && a2.channel == a0.channel)
        try await Task.sleep(nanoseconds: 1_000_000_000)
        let a3 = try #require(try Self.status(lab).first { $0.name == "stick-a" })
        #expect(a3.bytesIn > a2.bytesIn)
        let report = GuestReport(serial: vm1.serial)
        let diskA = report.lines.first { $0.hasPrefix("disk-added") && $0.hasSuffix("size=8388608") }?
            .split(separator: " ")[1]
        #expect(diskA != nil)
        #expect(diskA != diskB)
        #expect(!report.lines.contains { $0.hasPrefix("read-error disk=\(diskA ?? "?") ") }, "\(report)")
        #expect(!report.lines.contains { $0 == "disk-removed \(diskA ?? "?")" }, "stick-a's disk went away:\n\(report)")

        // An invalid profile: reported, nothing changes.
        let sessionsBefore = try Self.status(lab).map { "\($0.name) \($0.since)" }
        try Self.write("version: 1\ndevices:\n  - name: stick-a\n    to: nowhere\n", to: lab.profile)
        let reported = await waitUntil(timeout: 5, interval: 0.05) { apply.log.contains("keeping the running state") }
        #expect(reported != nil, "apply:\n\(apply.log)")
        #expect(apply.log.contains("lab.yaml:4:9: error"), "apply:\n\(apply.log.suffix(1500))")
        #expect(try Self.status(lab).map { "\($0.name) \($0.since)" } == sessionsBefore)

        // SIGTERM: devices disconnected cleanly, exit 0.
        apply.signal(SIGTERM)
        #expect(await apply.waitForExit(timeout: 10) == 0)
        #expect(await vm2.serialContains("disk-removed", within: 10))
    }

    @Test func aRestartedVMIsServedAgainByItself() async throws {
        let (lab, first, apply) = try await Self.applyOneStickOnVM2()
        var vm = first
        defer { vm.stop(); apply.signal(SIGKILL) }
        vm.kill()
        let down = try await waitUntil(timeout: 5, interval: 0.05) { try Self.status(lab).first?.state == .backoff }
        #expect(down != nil, "apply:\n\(apply.log)")
        let restarted = Date()
        vm = try Self.watchVM(port: lab.vm2Port, channels: 1)
        let back = await vm.serialContains("size=10485760", within: 60)
        #expect(back, "apply:\n\(apply.log)")
        print("APPLY restarted VM served again after \(String(format: "%.1f", Date().timeIntervalSince(restarted))) s")
        // One log line per state change, not per attempt.
        let backoffLines = apply.log.components(separatedBy: "session backoff").count - 1
        #expect(backoffLines <= 2, "apply:\n\(apply.log)")
    }

    @Test func aDisplacedSessionWaitsForTheOtherClientToLeave() async throws {
        let (lab, first, apply) = try await Self.applyOneStickOnVM2()
        let vm = first
        defer { vm.stop(); apply.signal(SIGKILL) }
        // Another SPICE client takes the VM over (as remote-viewer would).
        let other = try await SpiceSession.connect(
            SpiceEndpointConfiguration(address: HostPort(host: "127.0.0.1", port: lab.vm2Port)),
            logger: Logger(label: "other-client"))
        let displaced = try await waitUntil(timeout: 10, interval: 0.05) { try Self.status(lab).first?.state == .displaced }
        #expect(displaced != nil, "apply:\n\(apply.log)")
        // Left alone while the other client holds the VM (backoff would have
        // retried within about 0.5 s and displaced it in turn).
        try await Task.sleep(nanoseconds: 3_000_000_000)
        #expect(try Self.status(lab).first?.state == .displaced)
        #expect(!other.isClosed, "usbredir fought back and displaced the other client")
        // The other client leaves: the VM is free and the session comes back
        // by itself (the server is on this host, its clients can be counted).
        other.close()
        let back = try await waitUntil(timeout: 15, interval: 0.05) { try Self.status(lab).first?.state == .connected }
        #expect(back != nil, "apply:\n\(apply.log)")
        print("APPLY displaced session linked again \(String(format: "%.2f", back ?? -1)) s after the other client left")
    }

    /// `set_password spice ... disconnect` drops us with no other client
    /// taking over: not displacement, the session links again without SIGHUP
    /// and the guest gets its stick back.
    @Test func aServerDropIsLinkedAgainWithoutSIGHUP() async throws {
        let lab = try Self.makeLab()
        let secret = lab.dir.appendingPathComponent("vm2.password")
        try "s3cret\n".write(to: secret, atomically: true, encoding: .utf8)
        chmod(secret.path, 0o600)
        let text = Self.profile(lab, sticks: [("stick-c", "c.img", "vm2")]).replacingOccurrences(
            of: "spice: 127.0.0.1:\(lab.vm2Port)\n",
            with: "spice: 127.0.0.1:\(lab.vm2Port)\n    password-file: \(secret.path)\n")
        try Self.write(text, to: lab.profile)
        let vm = try Self.watchVM(port: lab.vm2Port, channels: 1, password: "s3cret")
        let apply = try BackgroundProcess(builtProduct("usbredir"), ["apply", "--socket", lab.socket, lab.profile.path],
                                          logFile: lab.dir.appendingPathComponent("apply.log"))
        defer { vm.stop(); apply.signal(SIGKILL) }
        #expect(await vm.serialContains("size=10485760", within: 60), "apply:\n\(apply.log)")
        let disksAdded = { GuestReport(serial: vm.serial).lines.filter { $0.hasPrefix("disk-added") }.count }
        #expect(disksAdded() == 1)

        let dropped = Date()
        _ = try vm.qmp(#"{"execute":"set_password","arguments":{"protocol":"spice","password":"s3cret","connected":"disconnect"}}"#)
        let again = await waitUntil(timeout: 30, interval: 0.1) { disksAdded() >= 2 }
        #expect(again != nil, "guest:\n\(GuestReport(serial: vm.serial))\napply:\n\(apply.log)")
        #expect(try Self.status(lab).first?.state == .connected)
        #expect(!apply.log.contains("session displaced"), "apply:\n\(apply.log)")
        print("APPLY after set_password disconnect the guest had its stick again in \(String(format: "%.2f", Date().timeIntervalSince(dropped))) s")
    }
}
