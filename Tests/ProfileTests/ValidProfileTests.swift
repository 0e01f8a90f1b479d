import Common
import Foundation
import Testing
@testable import Profile

@Suite struct ValidProfileTests {
    /// Every key of the profile schema (usbredir-profile(5)).
    static let full = """
        version: 1
        log: notice
        endpoints:
          vm1:
            spice: 127.0.0.1:5930
            password-file: vm1.pass
          vm2:
            spice-tls: lab2:5931
            ca-file: ca.pem
            host-subject: "C=US, O=Lab, CN=lab2"
          rig:
            usbredir: 127.0.0.1:4000
          bench:
            listen: "[::1]:4001"
          vm6:
            spice: 10.0.0.6:5930
            password-env: VM6_PASSWORD
        devices:
          - name: arduino
            to: vm1
            log: debug
            channel: 1
            match:
              vendor: 0x2341
              product: [0x0043, 0x6001]
              serial: "85736323838351F0D1C1"
              port: "1-3.2"
          - name: stick
            to: vm1
            virtual:
              kind: mass-storage
              image: images/stick.img
              read-only: true
          - name: gen
            to: rig
            virtual:
              kind: source-sink
        hosts:
          labhost1:
            devices:
              - name: scope
                to: vm2
                match:
                  vendor: 4660
        """

    static let files = ["vm1.pass": "secret\n", "ca.pem": "PEM\n", "images/stick.img": "disk"]

    @Test func fullProfileParsesIntoTypedValues() throws {
        let scratch = try Scratch(files: Self.files)
        let result = try scratch.load(Self.full, host: "labhost1.example.org", environment: ["VM6_PASSWORD": "x"])
        #expect(result.diagnostics.isEmpty)
        let profile = try #require(result.profile)
        let dir = scratch.directory

        #expect(profile.version == 1)
        #expect(profile.log == .notice)
        #expect(profile.sourcePath == dir + "/p.yaml")
        #expect(profile.selectedHost == "labhost1")
        #expect(profile.endpointOrder == ["vm1", "vm2", "rig", "bench", "vm6"])
        #expect(profile.orderedEndpoints.map(\.name) == profile.endpointOrder)

        let vm1 = try #require(profile.endpoints["vm1"])
        #expect(vm1.kind == .spice(HostPort(host: "127.0.0.1", port: 5930)))
        #expect(vm1.password == .file(dir + "/vm1.pass"))
        #expect(vm1.location == SourcePosition(line: 4, column: 3))
        #expect(profile.endpoints["vm2"]?.kind == .spiceTLS(HostPort(host: "lab2", port: 5931), caFile: dir + "/ca.pem",
                                                           hostSubject: "C=US, O=Lab, CN=lab2"))
        #expect(profile.endpoints["vm2"]?.password == nil)
        #expect(profile.endpoints["rig"]?.kind == .usbredir(HostPort(host: "127.0.0.1", port: 4000)))
        #expect(profile.endpoints["bench"]?.kind == .listen(HostPort(host: "::1", port: 4001)))
        #expect(profile.endpoints["bench"]?.addressDescription == "[::1]:4001")
        #expect(profile.endpoints["vm6"]?.password == .env("VM6_PASSWORD"))
        #expect(profile.endpoints["rig"]?.isSpice == false)
        #expect(profile.endpoints["vm2"]?.kindName == "spice-tls")

        #expect(profile.devices.map(\.name) == ["arduino", "stick", "gen", "scope"])
        let arduino = profile.devices[0]
        #expect(arduino.endpoint == "vm1")
        #expect(arduino.log == .debug)
        #expect(arduino.channel == 1)
        #expect(arduino.location == SourcePosition(line: 19, column: 5))
        #expect(arduino.hostSection == nil)
        #expect(arduino.source == .match(MatchRule(vendors: [0x2341], products: [0x0043, 0x6001],
                                                    serial: "85736323838351F0D1C1", port: "1-3.2")))
        #expect(profile.logLevel(for: arduino) == .debug)

        let stick = profile.devices[1]
        #expect(stick.log == nil && stick.channel == nil)
        #expect(profile.logLevel(for: stick) == .notice)
        #expect(stick.source == .virtual(VirtualDevice(kind: .massStorage, image: dir + "/images/stick.img",
                                                        readOnly: true)))
        #expect(profile.devices[2].source == .virtual(VirtualDevice(kind: .sourceSink, image: nil, readOnly: false)))

        let scope = profile.devices[3]
        #expect(scope.hostSection == "labhost1")
        #expect(scope.source == .match(MatchRule(vendors: [4660])))
    }

    @Test func readOnlyDefaultsToFalseAndLogToInfo() throws {
        let scratch = try Scratch(files: ["s.img": ""])
        let result = try scratch.load("""
            version: 1
            endpoints: {vm1: {spice: "localhost:5930"}}
            devices:
              - {name: s, to: vm1, virtual: {kind: mass-storage, image: s.img}}
            """)
        let profile = try #require(result.profile)
        #expect(profile.log == .info)
        #expect(profile.devices.first?.source == .virtual(VirtualDevice(kind: .massStorage,
                                                                        image: scratch.path("s.img"), readOnly: false)))
    }

    @Test func aStickIsHighSpeedUnlessToldSuper() throws {
        let scratch = try Scratch(files: ["s.img": "", "t.img": ""])
        let result = try scratch.load("""
            version: 1
            endpoints: {vm1: {spice: "localhost:5930"}}
            devices:
              - {name: s, to: vm1, virtual: {kind: mass-storage, image: s.img}}
              - {name: t, to: vm1, virtual: {kind: mass-storage, image: t.img, speed: super}}
            """)
        let profile = try #require(result.profile, "\(result.diagnostics)")
        #expect(profile.devices.map(\.source) == [
            .virtual(VirtualDevice(kind: .massStorage, image: scratch.path("s.img"), speed: .high)),
            .virtual(VirtualDevice(kind: .massStorage, image: scratch.path("t.img"), speed: .super)),
        ])
    }

    @Test func relativePathsStartFromTheProfilesFolder() throws {
        // The profile lives in conf/; its files in conf/keys and in the
        // scratch folder's images/, named with `..`; the working directory
        // plays no part.
        let scratch = try Scratch(files: ["conf/keys/vm1.pass": "pw", "images/a.img": "", "abs.img": ""])
        let result = try scratch.load("""
            version: 1
            endpoints:
              vm1:
                spice: 127.0.0.1:5930
                password-file: keys/./vm1.pass
            devices:
              - name: a
                to: vm1
                virtual: {kind: mass-storage, image: ../images/a.img}
              - name: b
                to: vm1
                virtual: {kind: mass-storage, image: \(scratch.path("abs.img"))}
            """, name: "conf/lab.yaml")
        let profile = try #require(result.profile, "\(result.diagnostics)")
        #expect(profile.endpoints["vm1"]?.password == .file(scratch.path("conf/keys/vm1.pass")))
        #expect(profile.devices[0].source == .virtual(VirtualDevice(kind: .massStorage, image: scratch.path("images/a.img"))))
        #expect(profile.devices[1].source == .virtual(VirtualDevice(kind: .massStorage, image: scratch.path("abs.img"))))
    }

    @Test func withoutFileChecksMissingFilesAreAccepted() throws {
        let scratch = try Scratch()
        let result = try scratch.load("""
            version: 1
            endpoints: {vm1: {spice: "h:1", password-file: nope}}
            devices: [{name: a, to: vm1, virtual: {kind: mass-storage, image: nope.img}}]
            """, checkFiles: false)
        #expect(result.diagnostics.isEmpty)
        #expect(result.profile?.endpoints["vm1"]?.password == .file(scratch.path("nope")))
    }

    @Test func equalityIgnoresWhereEntriesAreWritten() throws {
        // A reconcile compares assignments; moving lines must not restart them.
        let scratch = try Scratch()
        let one = try #require(try scratch.load("""
            version: 1
            endpoints: {vm1: {spice: "h:1"}}
            devices: [{name: a, to: vm1, match: {vendor: 1}}]
            """).profile)
        let two = try #require(try scratch.load("""
            # a comment pushes everything down

            version: 1
            endpoints:
              vm1: {spice: "h:1"}
            devices:
              - {name: a, to: vm1, match: {vendor: [1, 1]}}
            """).profile)
        #expect(one.devices[0].location != two.devices[0].location)
        #expect(one.devices[0] == two.devices[0])  // a repeated vendor changes nothing either
        #expect(one.endpoints == two.endpoints)
    }
}

@Suite struct HostSectionTests {
    static let yaml = """
        version: 1
        endpoints: {vm1: {spice: "h:1"}}
        devices:
          - {name: global, to: vm1, match: {vendor: 1}}
        hosts:
          labhost1:
            devices:
              - {name: one, to: vm1, match: {vendor: 2}}
          LabHost2:
            devices:
              - {name: two, to: vm1, match: {vendor: 3}}
          empty:
        """

    func names(host: String) throws -> [String] {
        let result = try Scratch().load(Self.yaml, host: host)
        return try #require(result.profile, "\(result.diagnostics)").devices.map(\.name)
    }

    @Test func shortHostnameSelectsTheSection() throws {
        #expect(try names(host: "labhost1") == ["global", "one"])
        #expect(try names(host: "labhost1.lab.example.org") == ["global", "one"])
        #expect(try names(host: "labhost2") == ["global", "two"])  // case does not matter
        #expect(try names(host: "otherhost") == ["global"])
        #expect(try names(host: "empty") == ["global"])
    }

    @Test func selectHostMatchesFullOrShortName() {
        #expect(ProfileLoader.selectHost("a.b.c", among: ["x", "a"]) == "a")
        #expect(ProfileLoader.selectHost("a.b.c", among: ["a.b.c"]) == "a.b.c")
        #expect(ProfileLoader.selectHost("ab", among: ["a"]) == nil)
    }

    /// This machine's hostname as the kernel has it, read independently of
    /// the loader (which calls gethostname).
    static func machineHostname() -> String? {
        let kernel = (try? String(contentsOfFile: "/proc/sys/kernel/hostname", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        if let kernel, !kernel.isEmpty { return kernel }
        let name = ProcessInfo.processInfo.hostName
        return name.isEmpty ? nil : name
    }

    /// Without --host, the section named after this machine is used: the
    /// profile has one named after the real hostname, computed now, next to
    /// one for another machine.
    @Test func machineHostnameIsTheDefault() throws {
        let machine = try #require(Self.machineHostname(), "cannot tell this machine's hostname")
        let short = String(machine.split(separator: ".").first ?? Substring(machine))
        let scratch = try Scratch()
        try scratch.write("p.yaml", """
            version: 1
            endpoints: {vm1: {spice: "h:1"}}
            devices:
              - {name: global, to: vm1, match: {vendor: 1}}
            hosts:
              "not-\(short)":
                devices:
                  - {name: elsewhere, to: vm1, match: {vendor: 2}}
              "\(short)":
                devices:
                  - {name: this-machine, to: vm1, match: {vendor: 3}}
            """)
        let result = ProfileLoader.load(path: scratch.path("p.yaml"), environment: [:])
        let profile = try #require(result.profile, "\(result.diagnostics)")
        #expect(profile.selectedHost == short, "machine \(machine)")
        #expect(profile.devices.map(\.name) == ["global", "this-machine"], "machine \(machine)")
    }

    @Test func sameNameInTwoHostSectionsIsFine() throws {
        let result = try Scratch().load("""
            version: 1
            endpoints: {vm1: {spice: "h:1"}}
            hosts:
              a: {devices: [{name: scope, to: vm1, match: {vendor: 1}}]}
              b: {devices: [{name: scope, to: vm1, match: {vendor: 1}}]}
            """, host: "b")
        #expect(result.diagnostics.isEmpty)
        #expect(result.profile?.devices.map(\.hostSection) == ["b"])
    }
}

@Suite struct PasswordTests {
    @Test func oneTrailingNewlineIsStripped() throws {
        let scratch = try Scratch(files: ["a": "pw\n", "b": "pw\n\n", "c": "pw", "d": "pw\r\n", "e": " p w \n"])
        func password(_ name: String) throws -> String { try PasswordSource.file(scratch.path(name)).load(environment: [:]) }
        #expect(try password("a") == "pw")
        #expect(try password("b") == "pw\n")
        #expect(try password("c") == "pw")
        #expect(try password("d") == "pw")
        #expect(try password("e") == " p w ")
    }

    @Test func environmentPasswordAndUnsetVariable() throws {
        #expect(try PasswordSource.env("PW").load(environment: ["PW": "x"]) == "x")
        #expect(throws: PasswordError.unsetVariable("PW")) { try PasswordSource.env("PW").load(environment: [:]) }
        #expect(throws: PasswordError.self) { try PasswordSource.file("/nonexistent/pw").load(environment: [:]) }
    }

    @Test func applyCanTreatAnUnsetVariableAsAnErrorForThatEndpoint() throws {
        let result = try Scratch().load("""
            version: 1
            endpoints:
              vm1: {spice: "h:1", password-env: PW1}
              vm2: {spice: "h:2", password-env: PW2}
            """, environment: ["PW2": "x"])
        let profile = try #require(result.profile)  // a warning only
        #expect(profile.endpointsWithUnsetPasswordVariable(environment: ["PW2": "x"]) == ["vm1"])
        #expect(throws: PasswordError.unsetVariable("PW1")) {
            try profile.endpoints["vm1"]?.loadPassword(environment: ["PW2": "x"])
        }
        #expect(try profile.endpoints["vm2"]?.loadPassword(environment: ["PW2": "x"]) == "x")
    }
}

@Suite struct OverlapTests {
    @Test func overlappingRulesAreAllowedAndListed() throws {
        let result = try Scratch().load("""
            version: 1
            endpoints: {vm1: {spice: "h:1"}, vm2: {spice: "h:2"}}
            devices:
              - {name: any-arduino, to: vm1, match: {vendor: 0x2341}}
              - {name: my-arduino, to: vm2, match: {serial: ABC}}
              - {name: uno, to: vm2, match: {vendor: 0x2341, product: [0x43, 0x1]}}
              - {name: other, to: vm2, match: {vendor: 0x1234}}
              - {name: disk, to: vm2, virtual: {kind: source-sink}}
            """)
        let profile = try #require(result.profile, "\(result.diagnostics)")
        let pairs = overlaps(profile).map { "\($0.0.name)+\($0.1.name)" }
        #expect(pairs == ["any-arduino+my-arduino", "any-arduino+uno", "my-arduino+uno", "my-arduino+other"])
        #expect(profile.overlaps.count == pairs.count)
    }

    @Test func matchRuleMatching() {
        let rule = MatchRule(vendors: [0x2341], products: [0x43, 0x6001], serial: "S")
        #expect(rule.matches(vendor: 0x2341, product: 0x6001, serial: "S", port: "1-1"))
        #expect(!rule.matches(vendor: 0x2341, product: 0x6001, serial: nil, port: "1-1"))
        #expect(!rule.matches(vendor: 0x2341, product: 0x1, serial: "S", port: "1-1"))
        #expect(MatchRule(port: "1-3.2").matches(vendor: 1, product: 2, serial: nil, port: "1-3.2"))
        #expect(!MatchRule(vendors: [1], serial: "A").overlaps(MatchRule(vendors: [1], serial: "B")))
        #expect(MatchRule(vendors: [1, 2]).isIdentical(to: MatchRule(vendors: [2, 1, 2])))
    }
}

@Suite struct PieceTests {
    @Test func hostPortParsing() throws {
        #expect(try HostPort.parse("127.0.0.1:5930").get() == HostPort(host: "127.0.0.1", port: 5930))
        #expect(try HostPort.parse("[fe80::1]:1").get() == HostPort(host: "fe80::1", port: 1))
        #expect(try HostPort.parse("lab:65535").get().description == "lab:65535")
        #expect(throws: HostPort.ParseError.portOutOfRange("0")) { try HostPort.parse("lab:0").get() }
        #expect(throws: HostPort.ParseError.bareIPv6) { try HostPort.parse("::1:5930").get() }
        for bad in ["lab", "lab:", ":5930", "[::1]5930", "lab:59x", "a b:1"] {
            #expect(throws: HostPort.ParseError.malformed, "\(bad)") { try HostPort.parse(bad).get() }
        }
    }

    @Test func integerLiterals() {
        #expect(IntegerLiteral.parse("0") == .value(0))
        #expect(IntegerLiteral.parse("0x2341") == .value(0x2341))
        #expect(IntegerLiteral.parse("0xFFFF") == .value(0xFFFF))
        #expect(IntegerLiteral.parse("-3") == .value(-3))
        #expect(IntegerLiteral.parse("0043") == .leadingZero)
        #expect(IntegerLiteral.parse("0x") == .invalid)
        #expect(IntegerLiteral.parse("1_000") == .invalid)
        #expect(IntegerLiteral.parse("99999999999999999999") == .tooLarge)
    }

    @Test func suggestions() {
        #expect(Suggestion.closest(to: "vnedor", in: Keys.match) == "vendor")
        #expect(Suggestion.closest(to: "warn", in: LogLevel.allCases.map(\.rawValue)) == "warning")
        #expect(Suggestion.closest(to: "readonly", in: Keys.virtual) == "read-only")
        #expect(Suggestion.closest(to: "colour", in: Keys.device) == nil)
        #expect(Suggestion.editDistance("kitten", "sitting") == 3)
    }

    @Test func portPaths() {
        #expect(MatchRule.isPortPath("1-3.2"))
        #expect(MatchRule.isPortPath("2-1"))
        #expect(!MatchRule.isPortPath("1"))
        #expect(!MatchRule.isPortPath("1-3."))
        #expect(!MatchRule.isPortPath("usb1"))
    }
}
