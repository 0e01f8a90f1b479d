import Foundation
import Testing
@testable import Profile

/// `spice: unix:PATH`: SPICE on a unix domain socket (QEMU -spice unix=on).
@Suite struct UnixSocketEndpointTests {
    static func profile(_ endpoint: String) -> String {
        """
        version: 1
        endpoints:
          vm1: {\(endpoint)}
        devices:
          - {name: g, to: vm1, virtual: {kind: source-sink}}
        """
    }

    @Test func absoluteAndRelativePathsAreAccepted() throws {
        let scratch = try Scratch(files: ["vm1.pass": "secret"])
        let absolute = try scratch.load(Self.profile("spice: unix:/run/vm1/spice.sock"))
        #expect(absolute.diagnostics.isEmpty)
        let vm1 = try #require(absolute.profile?.endpoints["vm1"])
        #expect(vm1.kind == .spiceUnix("/run/vm1/spice.sock"))
        #expect(vm1.isSpice && vm1.kindName == "spice" && vm1.hostPort == nil)
        #expect(vm1.addressDescription == "unix:/run/vm1/spice.sock")
        // Relative to the profile's folder, like every path of a profile.
        let relative = try scratch.load(Self.profile("spice: unix:vm/spice.sock, password-file: vm1.pass"))
        #expect(relative.profile?.endpoints["vm1"]?.kind == .spiceUnix(scratch.directory + "/vm/spice.sock"))
    }

    @Test func spiceTLSAndRawEndpointsRefuseUnix() throws {
        #expect(try diagnostics(Self.profile("spice-tls: unix:/run/vm1/spice.sock")) == [
            "p.yaml:3:20: error: spice-tls takes host:port; only spice accepts unix:PATH"
                + "; QEMU serves its unix socket without TLS: use spice: unix:PATH",
        ])
        #expect(try diagnostics(Self.profile("usbredir: unix:/run/x.sock")) == [
            "p.yaml:3:19: error: usbredir takes host:port; only spice accepts unix:PATH",
        ])
    }

    @Test func aPathThatCannotBeASocketIsAnError() throws {
        #expect(try diagnostics(Self.profile("spice: unix:notes.txt"), files: ["notes.txt": "x"]) == [
            "p.yaml:3:16: error: not a socket: notes.txt",   // the folder is shown relative
        ])
        #expect(try diagnostics(Self.profile("spice: \"unix:\"")) == [
            "p.yaml:3:16: error: unix: needs a socket path; for example unix:/run/vm1/spice.sock",
        ])
        let long = "/run/" + String(repeating: "d", count: 120) + "/s.sock"
        #expect(try diagnostics(Self.profile("spice: unix:\(long)")) == [
            "p.yaml:3:16: error: socket path is longer than 107 bytes: \(long)",
        ])
    }
}
