import Foundation
import Testing
import TestSupport

/// A fault the lab sees: the VM's QEMU dies (killed, crashed) while its
/// guest writes to a redirected stick. Whatever the guest flushed before the
/// kill must be in the image byte for byte (the stick writes through, so an
/// acknowledged flush is on disk), and `usbredir apply` serves the stick
/// again when QEMU is back.
@Suite(.serialized, .requires(.qemu), .timeLimit(.minutes(10)))
struct QEMUKillFaultTests {
    static let mib = 64
    static let seed = "qemukill"

    @Test func whatTheGuestFlushedSurvivesAQEMUKillAndTheStickComesBack() async throws {
        let dir = try makeTemporaryDirectory("usbredir-qemukill")
        let image = dir.appendingPathComponent("stick.img").path
        try runCommand("/usr/bin/truncate", ["-s", "\(Self.mib)M", image])
        let port = freeLoopbackPort()
        let profile = dir.appendingPathComponent("lab.yaml")
        try """
            version: 1
            log: debug
            endpoints:
              vm:
                spice: 127.0.0.1:\(port)
            devices:
              - name: stick
                to: vm
                virtual:
                  kind: mass-storage
                  image: \(image)
                  read-only: false
            """.write(to: profile, atomically: true, encoding: .utf8)
        let apply = try BackgroundProcess(builtProduct("usbredir"), ["apply", "--socket", dir.appendingPathComponent("s.sock").path,
                                                                     profile.path],
                                          logFile: dir.appendingPathComponent("apply.log"))
        defer { apply.signal(SIGKILL) }

        var writing = try Guest.options(append: "usbtest=flushwrite usbtest.mib=\(Self.mib) usbtest.chunk=4 "
                                        + "usbtest.seed=\(Self.seed) usbtest.timeout=120")
        writing.spicePort = port
        writing.usbredirChannels = 1
        let vm = try QEMUVM(writing)
        defer { vm.stop() }
        // Kill QEMU mid-write, once a quarter of the stick is flushed.
        let reached = await waitUntil(timeout: 120, interval: 0.01) { Self.flushedMiB(vm.serial) >= 16 }
        vm.kill()
        #expect(reached != nil, "guest:\n\(GuestReport(serial: vm.serial))\napply:\n\(apply.log)")
        let promised = Self.flushedMiB(vm.serial)
        print("FAULT QEMU killed after the guest flushed \(promised) of \(Self.mib) MiB")
        #expect(promised < Self.mib, "the write had finished before the kill: not a kill during a write")
        #expect(!GuestReport(serial: vm.serial).has("write-error"), "guest:\n\(GuestReport(serial: vm.serial))")

        // Everything flushed is in the image, byte for byte.
        let expected = try guestPatternSHA256(seed: Self.seed, mib: promised)
        #expect(try sha256(ofFile: image, bytes: promised * 1_048_576) == expected,
                "the first \(promised) MiB of the image differ from what the guest flushed")
        #expect(processIsAlive(apply.process.processIdentifier), "apply died with QEMU:\n\(apply.log)")

        // QEMU is back (same SPICE port): the tool serves the stick again.
        var watching = try Guest.options(append: "usbtest=watch usbtest.wait=120")
        watching.spicePort = port
        watching.usbredirChannels = 1
        let restarted = Date()
        let again = try QEMUVM(watching)
        defer { again.stop() }
        #expect(await again.serialContains("size=\(Self.mib * 1_048_576)", within: 60), "apply:\n\(apply.log)")
        print("FAULT the restarted VM's guest had the stick again after \(String(format: "%.1f", Date().timeIntervalSince(restarted))) s")
    }

    /// The highest "flushed mib=K" the guest printed.
    static func flushedMiB(_ serial: String) -> Int {
        GuestReport(serial: serial).lines.compactMap { line in
            line.hasPrefix("flushed mib=") ? Int(line.dropFirst("flushed mib=".count)) : nil
        }.max() ?? 0
    }
}
