import Foundation
import Testing
import TestSupport

/// `usbredir attach DEVICE --to ENDPOINT`: a virtual stick served to a real
/// guest by each endpoint form, a clean exit 0 on SIGINT, and exit 1 with a
/// message for a wrong device or endpoint.
@Suite(.serialized, .requires(.qemu), .timeLimit(.minutes(10)))
struct AttachTests {
    enum Form: String, CaseIterable, Sendable { case spice, spiceUnix, tcp, listen }

    /// The guest hashes the stick and stays up (shell mode), so SIGINT
    /// reaches attach while it is connected.
    @Test(arguments: Form.allCases)
    func servesAStickAndExitsZeroOnSIGINT(_ form: Form) async throws {
        let dir = try makeTemporaryDirectory("usbredir-attach")
        let image = try makeRandomImage(mib: 8, in: dir)
        var o = try Guest.options(append: "usbtest=shell usbtest.mib=8")
        let endpoint: String
        switch form {
        case .spice:
            o.spicePort = freeLoopbackPort()
            o.usbredirChannels = 1
            endpoint = "spice://127.0.0.1:\(o.spicePort!)"
        case .spiceUnix:
            o.spiceUnixSocket = dir.appendingPathComponent("spice.sock").path
            o.usbredirChannels = 1
            endpoint = "spice+unix://\(o.spiceUnixSocket!)"
        case .tcp:
            o.redirListenPort = freeLoopbackPort()
            endpoint = "tcp://127.0.0.1:\(o.redirListenPort!)"
        case .listen:
            o.redirConnectPort = freeLoopbackPort()
            endpoint = "listen://127.0.0.1:\(o.redirConnectPort!)"
        }
        let vm = try QEMUVM(o)
        defer { vm.stop() }
        let attach = try BackgroundProcess(builtProduct("usbredir"),
                                           ["attach", "image:\(image),ro", "--to", endpoint,
                                            "--socket", dir.appendingPathComponent("s.sock").path],
                                           logFile: dir.appendingPathComponent("attach.log"))
        defer { attach.signal(SIGKILL) }
        // The whole result line (the console writes it in pieces).
        let hashed = await waitUntil(timeout: 90, interval: 0.05) {
            GuestReport(serial: vm.serial).line("sha256=")?.contains(" bytes=") == true
        }
        #expect(hashed != nil, "guest:\n\(vm.serial)\nattach:\n\(attach.log)")
        #expect(GuestReport(serial: vm.serial).value("sha256") == (try sha256(ofFile: image)),
                "guest:\n\(GuestReport(serial: vm.serial))")
        #expect(attach.log.contains("connected"), "attach:\n\(attach.log)")
        attach.signal(SIGINT)
        let status = await attach.waitForExit(timeout: 10)
        #expect(status == 0, "attach:\n\(attach.log)")
    }

    /// Exit status and standard error of a short attach.
    static func attachFails(_ arguments: [String]) async throws -> (Int32?, String) {
        let dir = try makeTemporaryDirectory("usbredir-attach-wrong")
        let attach = try BackgroundProcess(builtProduct("usbredir"),
                                           ["attach"] + arguments + ["--socket", dir.appendingPathComponent("s.sock").path],
                                           logFile: dir.appendingPathComponent("attach.log"))
        defer { attach.signal(SIGKILL) }
        return (await attach.waitForExit(timeout: 10), attach.log)
    }

    /// A VM that refuses the password: no retry helps, so attach ends (1).
    @Test func aRefusedPasswordExitsOneWithTheMessage() async throws {
        let dir = try makeTemporaryDirectory("usbredir-attach-password")
        let image = try makeRandomImage(mib: 1, in: dir)
        var o = QEMUVM.Options()
        o.spiceUnixSocket = dir.appendingPathComponent("spice.sock").path
        o.spicePassword = "the-right-one"
        o.usbredirChannels = 1
        let vm = try QEMUVM(o)
        defer { vm.stop() }
        let attach = try BackgroundProcess(builtProduct("usbredir"),
                                           ["attach", "image:\(image),ro", "--to", "spice+unix://\(o.spiceUnixSocket!)",
                                            "--password-env", "ATTACH_TEST_PW", "--socket", dir.appendingPathComponent("s.sock").path],
                                           logFile: dir.appendingPathComponent("attach.log"),
                                           environment: ["ATTACH_TEST_PW": "a-wrong-one"])
        defer { attach.signal(SIGKILL) }
        #expect(await attach.waitForExit(timeout: 20) == 1, "attach:\n\(attach.log)")
        #expect(attach.log.contains("usbredir attach: SPICE server rejected the password"), "attach:\n\(attach.log)")
    }

    @Test func aWrongDeviceOrEndpointExitsOneWithTheMessage() async throws {
        let cases: [([String], String)] = [
            (["1234:5678", "--to", "spice://127.0.0.1:5930"],
             "usbredir attach: no device present matches '1234:5678' (usbredir list shows the devices present)"),
            (["image:/nonexistent/stick.img", "--to", "spice://127.0.0.1:5930"],
             "usbredir attach: image file not found: /nonexistent/stick.img"),
            (["my-stick", "--to", "spice://127.0.0.1:5930"],
             "usbredir attach: device 'my-stick' is not VID:PID, VID:PID:SERIAL"),
            (["1-1", "--to", "vnc://127.0.0.1:5900"], "usbredir attach: unknown endpoint scheme 'vnc://'"),
            (["1-1", "--to", "127.0.0.1:5930"], "usbredir attach: endpoint '127.0.0.1:5930' is not a URL"),
        ]
        for (arguments, message) in cases {
            let (status, log) = try await Self.attachFails(arguments)
            #expect(status == 1, "\(arguments): \(log)")
            #expect(log.contains(message), "\(arguments): \(log)")
        }
    }
}
