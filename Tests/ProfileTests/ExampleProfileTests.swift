import Foundation
import Testing
import Profile

/// The profiles shipped in profiles/ validate as they are, with the files
/// they refer to (architecture.md).
@Suite struct ExampleProfileTests {
    static let folder = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("profiles").path

    static var examples: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
            .filter { $0.hasSuffix(".yaml") }.sorted()
    }

    @Test func theExpectedExamplesExist() {
        for name in ["lab.yaml", "virtual-stick.yaml", "bootloader.yaml", "per-host.yaml", "fleet.yaml"] {
            #expect(Self.examples.contains(name), "\(name)")
        }
    }

    @Test(arguments: examples)
    func exampleValidates(_ name: String) throws {
        let path = Self.folder + "/" + name
        for host in ["somewhere-else", "bench1", "bench2"] {
            let result = ProfileLoader.load(path: path, hostname: host, environment: [:], checkFiles: true)
            #expect(result.errors.isEmpty, "\(result.errors)")
            // The only warnings an example may give depend on this checkout, not
            // on the profile: its password-env is unset here, and git keeps no
            // file modes, so a shipped password file is readable by others.
            #expect(result.warnings.allSatisfy {
                $0.message.hasPrefix("password variable") || $0.message.hasSuffix("can be read by other users (mode 644)")
            }, "\(result.warnings)")
            #expect(result.profile?.devices.isEmpty == false)
        }
    }

    @Test func labShowsItsOverlap() throws {
        let profile = try #require(ProfileLoader.load(path: Self.folder + "/lab.yaml", hostname: "x", environment: [:]).profile)
        #expect(profile.overlaps.map { [$0.0.name, $0.1.name] } == [["uno-42", "arduino"]])
        #expect(try profile.endpoints["build-vm"]?.loadPassword(environment: [:]) == "changeme")
    }

    @Test func perHostPicksTheSection() throws {
        func names(_ host: String) -> [String]? {
            ProfileLoader.load(path: Self.folder + "/per-host.yaml", hostname: host, environment: [:]).profile?.devices.map(\.name)
        }
        #expect(names("bench1.lab.example.org") == ["test-pattern", "jtag"])
        #expect(names("bench2") == ["test-pattern", "jtag", "scope"])
        #expect(names("laptop") == ["test-pattern"])
    }

    @Test func bootloaderListsBothProductIDs() throws {
        let profile = try #require(ProfileLoader.load(path: Self.folder + "/bootloader.yaml", hostname: "x", environment: [:]).profile)
        guard case .match(let rule) = profile.devices.first?.source else {
            Issue.record("expected a match rule")
            return
        }
        #expect(rule.vendors == [0x2341] && rule.products == [0x8036, 0x0036])
        #expect(rule.matches(vendor: 0x2341, product: 0x0036, serial: nil, port: "1-2"))
    }
}
