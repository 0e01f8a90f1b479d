import Foundation
import Testing
@testable import Profile

/// `libvirt: DOMAIN` endpoints, with optional `uri:`.
@Suite struct LibvirtEndpointTests {
    static func profile(_ endpoint: String, device extra: String = "") -> String {
        """
        version: 1
        endpoints:
          vm-a: {\(endpoint)}
        devices:
          - {name: g, to: vm-a\(extra), virtual: {kind: source-sink}}
        """
    }

    @Test func aDomainByNameWithTheDefaultOrAGivenURI() throws {
        let scratch = try Scratch()
        let plain = try scratch.load(Self.profile("libvirt: lab-vm-a", device: ", channel: 1"))
        #expect(plain.diagnostics.isEmpty)
        let endpoint = try #require(plain.profile?.endpoints["vm-a"])
        #expect(endpoint.kind == .libvirt(domain: "lab-vm-a", uri: "qemu:///system"))
        #expect(endpoint.isSpice && endpoint.kindName == "libvirt")
        #expect(endpoint.addressDescription == "domain lab-vm-a on qemu:///system")
        let remote = try scratch.load(Self.profile("libvirt: lab-vm-a, uri: \"qemu+ssh://lab1/system\""))
        #expect(remote.profile?.endpoints["vm-a"]?.kind == .libvirt(domain: "lab-vm-a", uri: "qemu+ssh://lab1/system"))
    }

    @Test func wrongLibvirtEndpointsAreDiagnosed() throws {
        #expect(try diagnostics(Self.profile("libvirt: \"lab vm\"")) == [
            "p.yaml:3:19: error: libvirt must be a domain name, found 'lab vm'; the name virsh list --all shows, e.g. lab-vm-a",
        ])
        #expect(try diagnostics(Self.profile("libvirt: a, uri: system")) == [
            "p.yaml:3:27: error: uri must be a libvirt connection URI, found 'system'; for example qemu:///system or qemu+ssh://host/system",
        ])
        #expect(try diagnostics(Self.profile("spice: 127.0.0.1:5930, uri: qemu:///system")) == [
            "p.yaml:3:33: error: uri applies to libvirt endpoints only",
        ])
        #expect(try diagnostics(Self.profile("libvirt: a, password-env: PW"), environment: ["PW": "x"]) == [
            "p.yaml:3:22: error: password-env does not apply to libvirt endpoints;"
                + " the password comes from the domain's definition (its graphics passwd)",
        ])
    }
}
