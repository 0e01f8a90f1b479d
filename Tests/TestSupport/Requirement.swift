import Foundation
import Testing
#if canImport(XCTest)
import XCTest
#endif

/// Something a test needs from the machine (a tool, root, an emulator).
///
/// Every gate of the suite goes through this type, so "may this test skip?"
/// has one answer: with `CI` set (to anything but empty, "false" or "0") a
/// missing requirement FAILS the test with its reason; elsewhere the test is
/// skipped with that reason. scripts/run-tests.sh also fails a run that
/// reports any skipped test.
public struct Requirement: Sendable, CustomStringConvertible {
    /// What is needed, for messages ("qemu-system-x86_64").
    public let what: String
    /// Why it is missing here, or nil when it is present.
    public let missingReason: String?

    public init(_ what: String, missingReason: String?) {
        self.what = what
        self.missingReason = missingReason
    }

    /// Evaluates `probe` now: it returns why `what` is missing, or nil.
    public init(_ what: String, probe: () -> String?) {
        self.init(what, missingReason: probe())
    }

    public var isMet: Bool { missingReason == nil }

    public var description: String {
        missingReason.map { "\(what) is needed: \($0)" } ?? "\(what) is present"
    }

    /// CI must run everything: `CI` set to anything but "", "false" or "0".
    public static var isCI: Bool { isCI(ProcessInfo.processInfo.environment["CI"]) }

    public static func isCI(_ value: String?) -> Bool {
        guard let value else { return false }
        return !["", "false", "0"].contains(value.trimmingCharacters(in: .whitespaces).lowercased())
    }

    /// All of `requirements` together (the reasons of the missing ones joined).
    public static func all(_ requirements: Requirement...) -> Requirement {
        let missing = requirements.compactMap { r in r.missingReason.map { "\(r.what): \($0)" } }
        return Requirement(requirements.map(\.what).joined(separator: " and "),
                           missingReason: missing.isEmpty ? nil : missing.joined(separator: "; "))
    }

    /// Should the test run? true when met; throws (the test fails with the
    /// reason) when missing under CI; false (the test is skipped) otherwise.
    public func shouldRun(ci: Bool = Requirement.isCI) throws -> Bool {
        guard let missingReason else { return true }
        if ci { throw RequirementMissing(requirement: self, reason: missingReason) }
        return false
    }

    /// Inside a test: throws when missing, whatever the environment (for a
    /// test that was let through because CI is set).
    public func require() throws {
        if let missingReason { throw RequirementMissing(requirement: self, reason: missingReason) }
    }

    #if canImport(XCTest)
    /// XCTest's gate: returns when met; under CI throws RequirementMissing
    /// (XCTest reports the thrown error as a failure); else throws XCTSkip.
    public func xctGate() throws {
        guard let missingReason else { return }
        if Requirement.isCI { throw RequirementMissing(requirement: self, reason: missingReason) }
        throw XCTSkip("\(what) unavailable: \(missingReason)")
    }
    #endif
}

public struct RequirementMissing: Error, CustomStringConvertible {
    public let requirement: Requirement
    public let reason: String
    public var description: String {
        "\(requirement.what) is required with CI set (scripts/install-deps.sh --all installs it), but: \(reason)"
    }
}

// MARK: The requirements of this suite

extension Requirement {
    /// QEMU for the transport and end-to-end suites.
    public static let qemu = Requirement("qemu-system-x86_64") {
        FileManager.default.isExecutableFile(atPath: QEMUVM.executable) ? nil : "\(QEMUVM.executable) is not installed"
    }

    /// Running as root (e.g. to drop to another user, or to write anything).
    public static let root = Requirement("root") {
        getuid() == 0 ? nil : "the tests run as uid \(getuid()), not root"
    }

    /// setpriv(1), to run a command as another user.
    public static let setpriv = Requirement("setpriv") {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") ? nil : "/usr/bin/setpriv is not installed"
    }

    /// Debian's libvirt0 (the library the tool opens for libvirt endpoints).
    /// Looked for on disk, not loaded: loading libvirt in the test process
    /// leaves thread-local state libdispatch trips over when a thread exits.
    public static let libvirt0 = Requirement("libvirt0") {
        ["/usr/lib/x86_64-linux-gnu/libvirt.so.0", "/usr/lib/aarch64-linux-gnu/libvirt.so.0", "/usr/lib64/libvirt.so.0"]
            .contains { FileManager.default.fileExists(atPath: $0) } ? nil : "libvirt.so.0 is not installed (apt install libvirt0)"
    }

    /// An executable found on PATH (or in the usual folders).
    public static func tool(_ name: String, hint: String? = nil) -> Requirement {
        Requirement(name) {
            findExecutable(name) == nil ? "\(name) is not installed" + (hint.map { "; \($0)" } ?? "") : nil
        }
    }
}

/// `name` on PATH, else in /usr/bin, /usr/local/bin or /opt/homebrew/bin.
public func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    let folders = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin", "/opt/homebrew/bin"]
    return folders.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

extension Trait where Self == ConditionTrait {
    /// The test (or every test of the suite) needs `requirement`: skipped
    /// without it, unless CI is set, where it fails with the reason.
    public static func requires(_ requirement: Requirement) -> Self {
        .enabled(Comment(rawValue: requirement.description)) { try requirement.shouldRun() }
    }
}
