import Common
import Foundation
import Testing
@testable import Profile

/// `usbredir attach DEVICE --to ENDPOINT`: the one-assignment profile.
@Suite struct OneOffTests {
    func kind(_ text: String) throws -> Endpoint.Kind { try OneOff.endpointKind(text, directory: "/work") }
    func message(_ body: () throws -> Any) -> String? {
        do { _ = try body(); return nil } catch { return "\(error)" }
    }

    @Test func everyEndpointForm() throws {
        #expect(try kind("spice://127.0.0.1:5930") == .spice(HostPort(host: "127.0.0.1", port: 5930)))
        #expect(try kind("spice://[::1]:5930/") == .spice(HostPort(host: "::1", port: 5930)))
        #expect(try kind("spice+unix:///run/vm1/spice.sock") == .spiceUnix("/run/vm1/spice.sock"))
        #expect(try kind("spice+unix://vm1/spice.sock") == .spiceUnix("/work/vm1/spice.sock"))
        #expect(try kind("tcp://localhost:4000") == .usbredir(HostPort(host: "localhost", port: 4000)))
        #expect(try kind("listen://0.0.0.0:4001") == .listen(HostPort(host: "0.0.0.0", port: 4001)))
        #expect(try kind("libvirt://lab-vm-a") == .libvirt(domain: "lab-vm-a", uri: "qemu:///system"))
        #expect(try kind("libvirt://lab-vm-a?uri=qemu+ssh://h/system") == .libvirt(domain: "lab-vm-a", uri: "qemu+ssh://h/system"))
    }

    @Test func wrongEndpointsSayWhatIsExpected() {
        #expect(message { try kind("127.0.0.1:5930") }
                == "endpoint '127.0.0.1:5930' is not a URL; use " + OneOff.endpointForms)
        #expect(message { try kind("vnc://h:1") } == "unknown endpoint scheme 'vnc://'; use " + OneOff.endpointForms)
        #expect(message { try kind("spice://h") } == "endpoint 'spice://h' must be spice://HOST:PORT (IPv6 in brackets)")
        #expect(message { try kind("tcp://h:70000") } == "port 70000 is out of range 1...65535")
        #expect(message { try kind("spice://h:1?password=x") }
                == "endpoint 'spice://h:1?password=x': give a password with --password-file or --password-env, not in the URL")
    }

    @Test func everyDeviceForm() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("oneoff-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        FileManager.default.createFile(atPath: dir.path + "/s.img", contents: Data(count: 4096))
        func source(_ text: String) throws -> Assignment.Source { try OneOff.source(text, directory: dir.path) }
        #expect(try source("2341:0043") == .match(MatchRule(vendors: [0x2341], products: [0x43])))
        #expect(try source("0x2341:43:ABC:1") == .match(MatchRule(vendors: [0x2341], products: [0x43], serial: "ABC:1")))
        #expect(try source("1-3.2") == .match(MatchRule(port: "1-3.2")))
        #expect(try source("image:s.img,ro") == .virtual(VirtualDevice(kind: .massStorage, image: dir.path + "/s.img", readOnly: true)))
        #expect(try source("image:\(dir.path)/s.img") == .virtual(VirtualDevice(kind: .massStorage, image: dir.path + "/s.img")))
        #expect(message { try source("image:missing.img") } == "image file not found: \(dir.path)/missing.img")
        #expect(message { try source("arduino") } == "device 'arduino' is not " + OneOff.deviceForms)
        #expect(message { try source("12345:1") } == "device '12345:1' is not " + OneOff.deviceForms)
    }

    @Test func theProfileHasOneAssignmentOnOneEndpoint() throws {
        let p = try OneOff.profile(device: "2341:0043", endpoint: "spice://127.0.0.1:5930", password: .env("PW"),
                                   channel: 1, log: .error, directory: "/work")
        #expect(p.devices.count == 1 && p.devices[0].channel == 1 && p.devices[0].endpoint == OneOff.endpointName)
        #expect(p.endpoints[OneOff.endpointName]?.password == .env("PW"))
        #expect(message { try OneOff.profile(device: "1-1", endpoint: "tcp://h:1", password: nil, channel: 2, log: .error,
                                             directory: "/") } == "--channel applies to spice endpoints only")
    }
}
