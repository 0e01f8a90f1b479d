import Foundation
import Testing
import TestSupport

/// `usbredir apply` with `spice: unix:PATH`: a VM serving SPICE on a unix
/// domain socket (`-spice unix=on,addr=PATH`), with a ticket and two
/// usbredir channels, reads the stick.
@Suite(.serialized, .requires(.qemu), .timeLimit(.minutes(5)))
struct UnixSocketApplyTests {
    @Test func aGuestReadsTheStickOverASpiceUnixSocket() async throws {
        let dir = try makeTemporaryDirectory("usbredir-unix")
        let image = try makeRandomImage(mib: 16, in: dir)
        let socket = dir.appendingPathComponent("spice.sock").path
        let password = dir.appendingPathComponent("vm.pass")
        try "unix-s3cret".write(to: password, atomically: true, encoding: .utf8)
        chmod(password.path, 0o600)
        // Pinned to channel 1: the channel list arrives over the socket too.
        let profile = dir.appendingPathComponent("lab.yaml")
        try """
            version: 1
            endpoints:
              vm: {spice: "unix:\(socket)", password-file: vm.pass}
            devices:
              - {name: stick, to: vm, channel: 1, virtual: {kind: mass-storage, image: \(image), read-only: true}}
            """.write(to: profile, atomically: true, encoding: .utf8)
        var o = try Guest.options(append: "usbtest=read usbtest.mib=16")
        o.spiceUnixSocket = socket
        o.spicePassword = "unix-s3cret"
        o.usbredirChannels = 2
        let vm = try QEMUVM(o)
        defer { vm.stop() }
        let apply = try BackgroundProcess(builtProduct("usbredir"),
                                          ["apply", "--socket", dir.appendingPathComponent("s.sock").path, profile.path],
                                          logFile: dir.appendingPathComponent("apply.log"))
        defer { apply.signal(SIGKILL) }
        let finished = await vm.exited(within: 120)
        let report = GuestReport(serial: vm.serial)
        #expect(finished, "guest:\n\(report)\napply:\n\(apply.log)")
        #expect(report.value("sha256") == (try sha256(ofFile: image)), "guest:\n\(report)\napply:\n\(apply.log)")
    }
}
