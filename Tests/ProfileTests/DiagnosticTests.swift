import Foundation
import Testing
@testable import Profile

/// One test per diagnostic: exact line, column, message and hint.
@Suite struct SyntaxDiagnosticTests {
    @Test func libyamlSyntaxError() throws {
        #expect(try diagnostics("""
            version: 1
            endpoints:
              vm1: {spice: "127.0.0.1:5930"
            devices: []
            """) == ["p.yaml:4:1: error: invalid YAML: did not find expected ',' or '}'; while parsing a flow mapping at line 3, column 8"])
    }

    @Test func invalidUTF8() throws {
        // libyaml's reader gives a byte offset, not a mark: line 2, column 6.
        let scratch = try Scratch()
        #expect(FileManager.default.createFile(atPath: scratch.path("p.yaml"),
                                               contents: Data("version: 1\nlog: ".utf8 + [0xFF] + Data("\n".utf8))))
        let result = ProfileLoader.load(path: scratch.path("p.yaml"), hostname: "h", environment: [:])
        #expect(scratch.descriptions(result) == ["p.yaml:2:6: error: invalid YAML: invalid leading UTF-8 octet"])
    }

    @Test func duplicateKey() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match:
                  vendor: 1
                  vendor: 2
            """) == ["p.yaml:12:7: error: duplicate key 'vendor'; first given at line 11, column 7"])
    }

    @Test func aliasIsRefused() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match: &rule {vendor: 1}
              - name: b
                to: vm1
                match: *rule
            """) == ["p.yaml:13:12: error: aliases (*rule) are not supported in a profile; write the value out in full"])
    }

    @Test func secondDocument() throws {
        #expect(try diagnostics("version: 1\n---\nversion: 1\n")
            == ["p.yaml:2:1: error: a profile is one YAML document; found a second one; remove the '---' line and what follows, or merge the documents"])
    }

    @Test func keyThatIsNotAString() throws {
        #expect(try diagnostics("version: 1\n[a, b]: 1\n")
            == ["p.yaml:2:1: error: a key must be a string, found a list"])
    }

    @Test func emptyProfile() throws {
        #expect(try diagnostics("# nothing here\n")
            == ["p.yaml:1:1: error: the profile is empty; a profile starts with 'version: 1'"])
    }

    @Test func unreadableProfile() {
        let result = ProfileLoader.load(path: "/nonexistent/lab.yaml", hostname: "h", environment: [:])
        #expect(result.diagnostics.map(\.description)
            == ["/nonexistent/lab.yaml: error: cannot read profile: No such file or directory"])
    }
}

@Suite struct TopLevelDiagnosticTests {
    @Test func profileThatIsNotAMapping() throws {
        #expect(try diagnostics("- version: 1\n")
            == ["p.yaml:1:1: error: the profile must be a mapping, found a list"])
    }

    @Test func missingVersion() throws {
        #expect(try diagnostics("# lab\nlog: info\n")
            == ["p.yaml:2:1: error: missing 'version'; a profile starts with 'version: 1'"])
    }

    @Test func unsupportedVersion() throws {
        #expect(try diagnostics("version: 2\n")
            == ["p.yaml:1:10: error: unsupported profile version 2; this usbredir reads version 1"])
    }

    @Test func quotedVersion() throws {
        #expect(try diagnostics("version: \"1\"\n")
            == ["p.yaml:1:10: error: version must be a number, not a quoted string; remove the quotes: version: 1"])
    }

    @Test func unknownKeyWithSuggestion() throws {
        #expect(try diagnostics("version: 1\nendpionts: {}\n")
            == ["p.yaml:2:1: error: unknown key 'endpionts' in the profile; did you mean 'endpoints'?"])
    }

    @Test func unknownKeyWithoutCloseMatch() throws {
        #expect(try diagnostics("version: 1\ncolour: red\n")
            == ["p.yaml:2:1: error: unknown key 'colour' in the profile; expected one of: version, log, metrics, endpoints, devices, hosts"])
    }

    @Test func unknownLogLevel() throws {
        #expect(try diagnostics("version: 1\nlog: warn\n")
            == ["p.yaml:2:6: error: unknown log level 'warn'; did you mean 'warning'?"])
    }

    @Test func wrongTypeOfSection() throws {
        #expect(try diagnostics("version: 1\nendpoints:\n  - vm1\ndevices: {a: 1}\n") == [
            "p.yaml:3:3: error: endpoints must be a mapping, found a list",
            "p.yaml:4:10: error: devices must be a list, found a mapping; start each device with '- '",
        ])
    }
}

@Suite struct EndpointDiagnosticTests {
    @Test func endpointWithoutKind() throws {
        #expect(try diagnostics("""
            version: 1
            endpoints:
              vm1:
                password-env: PW
            """, environment: ["PW": "x"])
            == ["p.yaml:3:3: error: endpoint 'vm1' needs exactly one of spice, spice-tls, usbredir, listen, libvirt; found none"])
    }

    @Test func endpointWithTwoKinds() throws {
        #expect(try diagnostics("""
            version: 1
            endpoints:
              vm1:
                spice: 127.0.0.1:5930
                usbredir: 127.0.0.1:4000
            """) == ["p.yaml:3:3: error: endpoint 'vm1' needs exactly one of spice, spice-tls, usbredir, listen, libvirt; found spice and usbredir"])
    }

    @Test func endpointThatIsNotAMapping() throws {
        #expect(try diagnostics("version: 1\nendpoints:\n  vm1: 127.0.0.1:5930\n  vm2:\n")
            == ["p.yaml:3:8: error: endpoint 'vm1' must be a mapping, found '127.0.0.1:5930'",
                "p.yaml:4:3: error: endpoint 'vm2' must be a mapping, found nothing"])
    }

    @Test func malformedAddresses() throws {
        #expect(try diagnostics("""
            version: 1
            endpoints:
              a: {spice: lab2}
              b: {spice: "lab2:70000"}
              c: {usbredir: "::1:4000"}
            """) == [
                "p.yaml:3:14: error: spice must be host:port, found 'lab2'; for example 127.0.0.1:5930",
                "p.yaml:4:14: error: port 70000 is out of range 1...65535",
                "p.yaml:5:17: error: usbredir must be host:port, found '::1:4000'; write IPv6 addresses in brackets: \"[::1]:5930\"",
            ])
    }

    @Test func unquotedIPv6IsAList() throws {
        #expect(try diagnostics("version: 1\nendpoints:\n  d:\n    listen: [\"::1\"]\n")
            == ["p.yaml:4:13: error: listen must be host:port, found a list; quote IPv6 addresses: \"[::1]:5930\""])
    }

    @Test func inlinePassword() throws {
        let result = try diagnostics("""
            version: 1
            endpoints:
              vm1:
                spice: 127.0.0.1:5930
                password: hunter2
            """)
        #expect(result == ["p.yaml:5:5: error: inline passwords are not allowed; use password-file: PATH or password-env: VARIABLE"])
        #expect(!result.joined().contains("hunter2"))
    }

    @Test func missingPasswordFile() throws {
        let scratch = try Scratch()
        let result = try scratch.load("""
            version: 1
            endpoints:
              vm1:
                spice: 127.0.0.1:5930
                password-file: secrets/vm1.pass
            """)
        #expect(scratch.descriptions(result) == [
            "p.yaml:5:20: error: password file not found: secrets/vm1.pass; relative paths start from the profile's folder, DIR",
        ])
    }

    @Test func passwordFileThatIsAFolder() throws {
        let scratch = try Scratch(files: ["keys/x": ""])
        let result = try scratch.load("version: 1\nendpoints: {vm1: {spice: \"h:1\", password-file: keys}}\n")
        #expect(scratch.descriptions(result) == ["p.yaml:2:48: error: password file is a directory, not a file: keys"])
    }

    @Test func unsetPasswordVariableIsAWarning() throws {
        let scratch = try Scratch()
        let result = try scratch.load("""
            version: 1
            endpoints:
              vm1:
                spice: 127.0.0.1:5930
                password-env: VM1_PASSWORD
            """)
        #expect(scratch.descriptions(result)
            == ["p.yaml:5:19: warning: password variable VM1_PASSWORD is not set; apply fails endpoint 'vm1' until it is set"])
        #expect(result.profile != nil)
    }

    @Test func passwordFileAndPasswordEnv() throws {
        #expect(try diagnostics("""
            version: 1
            endpoints:
              vm1:
                spice: 127.0.0.1:5930
                password-file: pw
                password-env: PW
            """, files: ["pw": "x"], environment: ["PW": "x"])
            == ["p.yaml:3:3: error: endpoint 'vm1' has both password-file and password-env; give one"])
    }

    @Test func passwordOnRawEndpoint() throws {
        #expect(try diagnostics("""
            version: 1
            endpoints:
              rig:
                usbredir: 127.0.0.1:4000
                password-env: PW
            """, environment: ["PW": "x"])
            == ["p.yaml:5:5: error: password-env applies to spice and spice-tls endpoints only; raw usbredir has no authentication"])
    }

    @Test func caFileOnPlainSpice() throws {
        #expect(try diagnostics("""
            version: 1
            endpoints:
              vm1:
                spice: 127.0.0.1:5930
                ca-file: ca.pem
            """, files: ["ca.pem": ""])
            == ["p.yaml:5:5: error: ca-file applies to spice-tls endpoints only"])
    }

    @Test func missingCAFile() throws {
        #expect(try diagnostics("""
            version: 1
            endpoints:
              vm2:
                spice-tls: lab2:5931
                ca-file: /nonexistent/ca.pem
            """) == ["p.yaml:5:14: error: CA file not found: /nonexistent/ca.pem"])
    }

    @Test func unknownEndpointKey() throws {
        #expect(try diagnostics("""
            version: 1
            endpoints:
              vm1:
                spice: 127.0.0.1:5930
                pasword-file: pw
            """) == ["p.yaml:5:5: error: unknown key 'pasword-file' in endpoint 'vm1'; did you mean 'password-file'?"])
    }
}

@Suite struct DeviceDiagnosticTests {
    @Test func deviceEntryThatIsNotAMapping() throws {
        #expect(try diagnostics(head + "  - arduino\n")
            == ["p.yaml:8:5: error: a device entry must be a mapping, found 'arduino'"])
    }

    @Test func missingNameAndTo() throws {
        #expect(try diagnostics(head + """
              - match: {vendor: 1}
              - name: b
                match: {vendor: 2}
            """) == [
                "p.yaml:8:5: error: a device entry needs a name",
                "p.yaml:8:5: error: a device entry needs 'to' (the endpoint it goes to)",
                "p.yaml:9:5: error: device 'b' needs 'to' (the endpoint it goes to)",
            ])
    }

    @Test func unknownDeviceKey() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                chanel: 1
                match: {vendor: 1}
            """) == ["p.yaml:10:5: error: unknown key 'chanel' in a device entry; did you mean 'channel'?"])
    }

    @Test func duplicateDeviceName() throws {
        #expect(try diagnostics(head + """
              - name: stick
                to: vm1
                match: {vendor: 1}
              - name: stick
                to: vm1
                match: {vendor: 2}
            """) == ["p.yaml:11:11: error: duplicate device name 'stick'; first used at line 8, column 11"])
    }

    @Test func unknownEndpoint() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm2
                match: {vendor: 1}
              - name: b
                to: lab
                match: {vendor: 2}
            """) == [
                "p.yaml:9:9: error: unknown endpoint 'vm2'; did you mean 'vm1'?",
                "p.yaml:12:9: error: unknown endpoint 'lab'; defined endpoints: rig, vm1",
            ])
    }

    @Test func channelOnRawEndpoint() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: rig
                channel: 0
                match: {vendor: 1}
            """) == ["p.yaml:10:5: error: channel applies to spice endpoints only; 'rig' is a usbredir endpoint"])
    }

    @Test func channelOutOfRange() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                channel: 256
                match: {vendor: 1}
              - name: b
                to: vm1
                channel: -1
                match: {vendor: 2}
            """) == [
                "p.yaml:10:14: error: channel 256 is out of range 0...255",
                "p.yaml:14:14: error: channel -1 is out of range 0...255",
            ])
    }

    @Test func channelTakenTwice() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                channel: 2
                match: {vendor: 1}
              - name: b
                to: vm1
                channel: 0x2
                match: {vendor: 2}
            """) == ["p.yaml:14:14: error: channel 2 of endpoint 'vm1' is already taken by 'a'"])
    }

    @Test func rawEndpointWithTwoAssignments() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: rig
                match: {vendor: 1}
              - name: b
                to: rig
                virtual: {kind: source-sink}
            """) == ["p.yaml:12:9: error: endpoint 'rig' already carries 'a'; a raw usbredir endpoint (usbredir or listen) carries exactly one assignment"])
    }

    @Test func virtualAndMatchInOneEntry() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match: {vendor: 1}
                virtual: {kind: source-sink}
            """) == ["p.yaml:8:5: error: device 'a' has both match and virtual; give one"])
    }

    @Test func neitherVirtualNorMatch() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
            """) == ["p.yaml:8:5: error: device 'a' needs match or virtual"])
    }

    @Test func unknownAssignmentLogLevel() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                log: verbose
                virtual: {kind: source-sink}
            """) == ["p.yaml:10:10: error: unknown log level 'verbose'; expected one of: trace, debug, info, notice, warning, error, critical"])
    }
}

@Suite struct MatchDiagnosticTests {
    @Test func emptyMatch() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match: {}
              - name: b
                to: vm1
                match:
            """) == [
                "p.yaml:10:5: error: match needs at least one of vendor, product, serial, port",
                "p.yaml:13:5: error: match needs at least one of vendor, product, serial, port",
            ])
    }

    @Test func vendorAndProductOutOfRange() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match:
                  vendor: 0x12345
                  product: [0x0043, 65536]
            """) == [
                "p.yaml:11:15: error: vendor 0x12345 is out of range (16-bit: 0x0000...0xffff)",
                "p.yaml:12:25: error: product 65536 is out of range (16-bit: 0x0000...0xffff)",
            ])
    }

    @Test func quotedNumber() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match:
                  vendor: "0x2341"
            """) == ["p.yaml:11:15: error: vendor must be a number, not a quoted string; remove the quotes: vendor: 0x2341"])
    }

    @Test func notANumber() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match: {vendor: arduino, product: 1.5}
            """) == [
                "p.yaml:10:21: error: vendor must be an integer (decimal or 0x-hex), found 'arduino'",
                "p.yaml:10:39: error: product must be an integer (decimal or 0x-hex), found '1.5'",
            ])
    }

    @Test func leadingZero() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match: {product: 0043}
            """) == ["p.yaml:10:22: error: ambiguous number '0043': leading zeros are not allowed; write 0x0043 for hex or 43 for decimal"])
    }

    @Test func emptyVendorListAndWrongType() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match: {vendor: [], product: {id: 1}}
            """) == [
                "p.yaml:10:21: error: vendor list is empty",
                "p.yaml:10:34: error: product must be an integer, found a mapping",
            ])
    }

    @Test func serialOfWrongTypeAndBadPort() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match:
                  serial: [A, B]
                  port: usb1
            """) == [
                "p.yaml:11:15: error: serial must be a string, found a list",
                "p.yaml:12:13: error: port must be a bus-port path such as 1-3.2, found 'usb1'",
            ])
    }

    @Test func unknownMatchKey() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match: {vendr: 1}
            """) == ["p.yaml:10:13: error: unknown key 'vendr' in match; did you mean 'vendor'?"])
    }

    @Test func identicalMatchRules() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                match: {vendor: 0x2341, product: [1, 2]}
              - name: b
                to: vm1
                match: {product: [2, 1], vendor: 9025}
            """) == ["p.yaml:13:5: error: match rule is identical to that of 'a'; a device would always go to 'a', the first in file order"])
    }
}

@Suite struct VirtualDiagnosticTests {
    @Test func missingKind() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {image: a.img}
            """, files: ["a.img": ""]) == ["p.yaml:10:5: error: virtual needs 'kind' (mass-storage or source-sink)"])
    }

    @Test func unknownKind() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {kind: mass_storage, image: a.img}
            """, files: ["a.img": ""])
            == ["p.yaml:10:21: error: unknown virtual device kind 'mass_storage'; did you mean 'mass-storage'?"])
    }

    @Test func massStorageWithoutImage() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual:
                  kind: mass-storage
            """) == ["p.yaml:10:5: error: a mass-storage device needs 'image' (a disk image file)"])
    }

    @Test func missingImage() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual:
                  kind: mass-storage
                  image: images/none.img
            """) == ["p.yaml:12:14: error: image file not found: images/none.img; relative paths start from the profile's folder, DIR"])
    }

    @Test func imageOnSourceSink() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual:
                  kind: source-sink
                  read-only: true
            """) == ["p.yaml:12:7: error: read-only applies to mass-storage devices only"])
    }

    @Test func stickSpeeds() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {kind: mass-storage, image: a.img, speed: supper}
            """, files: ["a.img": ""]) == ["p.yaml:10:56: error: unknown stick speed 'supper'; did you mean 'super'?"])
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {kind: source-sink, speed: high}
            """) == ["p.yaml:10:34: error: speed applies to mass-storage devices only"])
    }

    @Test func uasNeedsASuperSpeedStick() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {kind: mass-storage, image: a.img, uas: true}
            """, files: ["a.img": ""]) == [
                "p.yaml:10:49: error: uas needs speed: super (UAS queues commands on bulk streams, which only SuperSpeed has)",
            ])
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {kind: mass-storage, image: a.img, speed: super, uas: true}
            """, files: ["a.img": ""]) == [])
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {kind: source-sink, uas: false}
            """) == ["p.yaml:10:34: error: uas applies to mass-storage devices only"])
    }

    @Test func unknownVirtualKey() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {kind: mass-storage, image: a.img, readonly: true}
            """, files: ["a.img": ""]) == ["p.yaml:10:49: error: unknown key 'readonly' in virtual; did you mean 'read-only'?"])
    }

    @Test func readOnlyNotABoolean() throws {
        #expect(try diagnostics(head + """
              - name: a
                to: vm1
                virtual: {kind: mass-storage, image: a.img, read-only: yes}
              - name: b
                to: vm1
                virtual: {kind: mass-storage, image: a.img, read-only: "true"}
            """, files: ["a.img": ""]) == [
                "p.yaml:10:60: error: read-only must be true or false, found 'yes'",
                "p.yaml:13:60: error: read-only must be true or false, not a quoted string; remove the quotes: read-only: true",
            ])
    }
}

@Suite struct HostDiagnosticTests {
    @Test func errorsInEveryHostSectionAreFound() throws {
        // Checked on any machine, not only on the host the section is for.
        #expect(try diagnostics(head + """
              - {name: a, to: vm1, match: {vendor: 1}}
            hosts:
              labhost1:
                devices:
                  - {name: a, to: vm1, match: {vendor: 2}}
                  - {name: b, to: vm1, match: {vendor: 1}}
              labhost2:
                device: []
              labhost3: [x]
            """, host: "elsewhere") == [
                "p.yaml:12:16: error: duplicate device name 'a'; first used at line 8, column 12",
                "p.yaml:13:28: error: match rule is identical to that of 'a'; a device would always go to 'a', the first in file order",
                "p.yaml:15:5: error: unknown key 'device' in host section 'labhost2'; did you mean 'devices'?",
                "p.yaml:16:13: error: host section 'labhost3' must be a mapping, found a list",
            ])
    }
}

@Suite struct ManyDiagnosticsTests {
    @Test func severalErrorsInOneRunInFileOrder() throws {
        #expect(try diagnostics("""
            version: 1
            log: loud
            endpoints:
              vm1:
                spice: 127.0.0.1:5930
                password: secret
              rig: {usbredir: "127.0.0.1:99999"}
            devices:
              - name: a
                to: vm9
                match: {vendor: 0x10000}
              - name: a
                to: vm1
                channel: 300
                virtual: {kind: mass-storage, image: none.img, read-only: true}
            """) == [
                "p.yaml:2:6: error: unknown log level 'loud'; expected one of: trace, debug, info, notice, warning, error, critical",
                "p.yaml:6:5: error: inline passwords are not allowed; use password-file: PATH or password-env: VARIABLE",
                "p.yaml:7:19: error: port 99999 is out of range 1...65535",
                "p.yaml:10:9: error: unknown endpoint 'vm9'; did you mean 'vm1'?",
                "p.yaml:11:21: error: vendor 0x10000 is out of range (16-bit: 0x0000...0xffff)",
                "p.yaml:12:11: error: duplicate device name 'a'; first used at line 9, column 11",
                "p.yaml:14:14: error: channel 300 is out of range 0...255",
                "p.yaml:15:42: error: image file not found: none.img; relative paths start from the profile's folder, DIR",
            ])
    }
}
