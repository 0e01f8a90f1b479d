#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport

/// libvirt only when used (issue 21): the binary does not link libvirt,
/// and with libvirt hidden (USBREDIR_LIBVIRT_SO pointing at nothing, which
/// is what a host without libvirt0 looks like to the loader) a profile
/// without libvirt endpoints runs while one with them says what to install.
@Suite(.serialized, .timeLimit(.minutes(2))) struct LibvirtOptionalTests {
    let usbredir = builtProduct("usbredir")
    static let hidden = "USBREDIR_LIBVIRT_SO=/nonexistent/libvirt.so.0"
    static let message = "install libvirt0 to use libvirt endpoints"

    /// No libvirt (nor what it brings: glib, gnutls), and no libxml2 or ICU
    /// (FoundationXML before) among the
    /// libraries the dynamic loader maps before main.
    @Test(.requires(.tool("ldd"))) func theBinaryDoesNotLinkLibvirt() throws {
        let libraries = try runCommand("/usr/bin/env", ["ldd", usbredir])
        #expect(libraries.contains("libusb-1.0"), "ldd printed: \(libraries)")
        for absent in ["libvirt", "libglib", "libgnutls", "libxml2", "libicu"] {
            #expect(!libraries.contains(absent), "\(absent) is linked: \(libraries)")
        }
    }

    func profile(_ text: String) throws -> URL {
        let url = try makeTemporaryDirectory("usbredir-novirt").appendingPathComponent("lab.yaml")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func apply(_ profile: URL) throws -> (BackgroundProcess, socket: String) {
        let dir = profile.deletingLastPathComponent()
        let socket = dir.appendingPathComponent("s.sock").path
        var environment = ProcessInfo.processInfo.environment
        environment["USBREDIR_LIBVIRT_SO"] = "/nonexistent/libvirt.so.0"
        let process = try BackgroundProcess(usbredir, ["apply", "--socket", socket, profile.path],
                                            logFile: dir.appendingPathComponent("apply.log"), environment: environment)
        return (process, socket)
    }

    func sessions(_ socket: String) -> [[String: Any]]? {
        guard let r = try? runCommandStatus(usbredir, ["status", "--json", "--socket", socket]), r.status == 0,
              let object = try? JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any] else { return nil }
        return object["sessions"] as? [[String: Any]]
    }

    @Test func withoutLibvirtAProfileWithoutLibvirtEndpointsRuns() async throws {
        let port = freeLoopbackPort()
        let lab = try profile("version: 1\nendpoints:\n  e: {listen: 127.0.0.1:\(port)}\n"
                              + "devices:\n  - {name: g, to: e, virtual: {kind: source-sink}}\n")
        let (apply, socket) = try apply(lab)
        defer { apply.signal(SIGKILL) }
        // A VM connects and gets the device: the session is served.
        var fd: Int32 = -1
        try await waitFor("apply to listen on \(port)", timeout: 20) {
            fd = (try? connectLoopback(port: port)) ?? -1
            return fd >= 0
        }
        defer { close(fd) }
        try await waitFor("the session to connect", timeout: 20) {
            guard let state = sessions(socket)?.first?["state"] as? String else { return false }
            return !["connecting", "backoff", "error"].contains(state)
        }
        #expect(apply.isAlive, "apply died: \(apply.log)")
        #expect(!apply.log.contains("libvirt"), "a profile without libvirt endpoints mentioned libvirt: \(apply.log)")
        let validate = try runCommandStatus("/usr/bin/env", [Self.hidden, usbredir, "validate", lab.path])
        #expect(validate.status == 0 && !validate.output.contains("libvirt"), "\(validate.output)")
    }

    @Test func withoutLibvirtALibvirtEndpointSaysWhatToInstall() async throws {
        let lab = try profile("version: 1\nendpoints:\n  vm: {libvirt: lab-vm-a}\n"
                              + "devices:\n  - {name: s, to: vm, virtual: {kind: source-sink}}\n")
        let validate = try runCommandStatus("/usr/bin/env", [Self.hidden, usbredir, "validate", lab.path])
        #expect(validate.status == 0, "the profile is valid; only this host lacks libvirt: \(validate.output)")
        #expect(validate.output.contains("\(lab.path):3:3: warning: endpoint 'vm': \(Self.message)"), "\(validate.output)")

        let (apply, socket) = try apply(lab)
        defer { apply.signal(SIGKILL) }
        var row: [String: Any] = [:]
        try await waitFor("the assignment to show the error", timeout: 20) {
            row = sessions(socket)?.first ?? [:]
            return row["state"] as? String == "error"
        }
        #expect((row["last_error"] as? String)?.contains("endpoint 'vm': \(Self.message)") == true, "\(row)")
        #expect(apply.log.contains(Self.message), "\(apply.log)")
        #expect(apply.isAlive, "apply must keep running (other assignments, a later SIGHUP): \(apply.log)")
    }

    /// The same profile with libvirt present does not say so: the message
    /// comes from the missing library, not from the profile.
    @Test(.requires(.libvirt0)) func withLibvirtTheProfileDoesNotAskForIt() throws {
        let lab = try profile("version: 1\nendpoints:\n  vm: {libvirt: lab-vm-a, uri: 'test:///default'}\n"
                              + "devices:\n  - {name: s, to: vm, virtual: {kind: source-sink}}\n")
        let validate = try runCommandStatus(usbredir, ["validate", lab.path])
        #expect(validate.status == 0)
        #expect(!validate.output.contains(Self.message), "\(validate.output)")
        #expect(validate.output.contains("domain 'lab-vm-a' does not exist on test:///default"), "\(validate.output)")
    }
}
