import Foundation
import Reconciler
import Testing
import TestSupport

/// The command line contract of architecture.md: exit statuses, --json, plan.
@Suite(.timeLimit(.minutes(3))) struct CommandLineTests {
    let usbredir = builtProduct("usbredir")

    func write(_ text: String, _ name: String = "p.yaml") throws -> URL {
        let dir = try makeTemporaryDirectory("usbredir-cli")
        let url = dir.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    @Test func versionAndHelp() throws {
        let v = try runCommandStatus(usbredir, ["--version"])
        #expect(v.status == 0 && v.output.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix("0."))
        let h = try runCommandStatus(usbredir, ["--help"])
        for command in ["apply", "plan", "validate", "status", "list"] { #expect(h.output.contains(command)) }
    }

    /// Issue 10, finding 11: a password file others can read is a warning,
    /// and with --strict an error.
    @Test func aPasswordFileOthersCanReadIsAWarningAndRefusedWithStrict() throws {
        let profile = try write("version: 1\nendpoints:\n  vm:\n    spice: 127.0.0.1:5930\n    password-file: vm.pass\n"
                                + "devices:\n  - {name: a, to: vm, virtual: {kind: source-sink}}\n")
        let secret = profile.deletingLastPathComponent().appendingPathComponent("vm.pass")
        try "hunter2\n".write(to: secret, atomically: true, encoding: .utf8)
        chmod(secret.path, 0o644)
        let loose = try runCommandStatus(usbredir, ["validate", profile.path])
        #expect(loose.status == 0)
        #expect(loose.output.contains("\(profile.path):5:20: warning: password file \(secret.path) can be read by other users (mode 644)"),
                "\(loose.output)")
        let strict = try runCommandStatus(usbredir, ["validate", "--strict", profile.path])
        #expect(strict.status == 65)
        #expect(strict.output.contains("error: password file"), "\(strict.output)")
        chmod(secret.path, 0o600)
        #expect(try runCommandStatus(usbredir, ["validate", "--strict", profile.path]).status == 0)
    }

    @Test func usageErrorsExit64() throws {
        #expect(try runCommandStatus(usbredir, ["validate", "--no-such-flag", "x.yaml"]).status == 64)
        #expect(try runCommandStatus(usbredir, ["frobnicate"]).status == 64)
    }

    @Test func validateReportsFileLineColumnAndExits65() throws {
        let bad = try write("version: 1\nendpoints:\n  vm:\n    spice: 127.0.0.1:5930\ndevices:\n  - name: a\n    to: vm\n    chanel: 1\n    virtual: {kind: source-sink}\n")
        let r = try runCommandStatus(usbredir, ["validate", bad.path])
        #expect(r.status == 65)
        #expect(r.output.contains("\(bad.path):8:5: error: unknown key 'chanel'"), "\(r.output)")
        #expect(r.output.contains("did you mean 'channel'"))
        let good = Guest.repositoryRoot.appendingPathComponent("profiles/virtual-stick.yaml").path
        #expect(try runCommandStatus(usbredir, ["validate", good]).status == 0)
    }

    @Test func applyRefusesAnInvalidProfileWith65() throws {
        let bad = try write("version: 2\n")
        let r = try runCommandStatus(usbredir, ["apply", bad.path])
        #expect(r.status == 65)
        #expect(r.output.contains(":1:10: error: unsupported profile version 2"), "\(r.output)")
    }

    /// `list --json` shows what the kernel shows: on a machine without USB
    /// (this one: no /sys/bus/usb/devices) an empty list, and exit 0.
    @Test func listPrintsWhatTheKernelShowsNothingWithoutUSBAndExits0() throws {
        let r = try runCommandStatus(usbredir, ["list", "--json"])
        #expect(r.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any]
        let devices = try #require(object?["devices"] as? [[String: Any]], "no devices array: \(r.output)")
        let expected = sysfsUSBDevicePorts()
        #expect(devices.compactMap { $0["port"] as? String }.sorted() == expected, "\(r.output)")
        #expect(devices.count == expected.count, "\(r.output)")
        if expected.isEmpty { #expect(devices.isEmpty, "\(r.output)") }
    }

    @Test func planShowsAssignmentsAndComparesWithARunningApply() async throws {
        let port = freeLoopbackPort()
        let profile = try write("""
            version: 1
            endpoints:
              vm:
                spice: 127.0.0.1:\(port)
            devices:
              - name: gadget
                to: vm
                virtual: {kind: source-sink}
              - name: board
                to: vm
                match: {vendor: 0x2341}
              - name: board-serial
                to: vm
                match: {vendor: 0x2341, serial: "X1"}
            """)
        let socket = profile.deletingLastPathComponent().appendingPathComponent("s.sock").path
        let json = try runCommandStatus(usbredir, ["plan", "--json", "--socket", socket, profile.path])
        #expect(json.status == 0)
        let plan = try JSONDecoder().decode(Plan.self, from: Data(json.output.utf8))
        #expect(plan.assignments.map(\.name) == ["gadget", "board", "board-serial"])
        #expect(plan.assignments.first?.device == "virtual:source-sink")
        #expect(plan.assignments.allSatisfy { $0.action == .add } && !plan.runningApply)
        #expect(plan.conflicts.count == 1 && plan.conflicts.first?.first == "board")
        #expect(try runCommandStatus(usbredir, ["plan", "--detailed-exitcode", "--socket", socket, profile.path]).status == 2)

        // The endpoint is down: apply waits (backoff) but answers status; plan says up to date.
        let apply = try BackgroundProcess(usbredir, ["apply", "--socket", socket, profile.path],
                                          logFile: profile.deletingLastPathComponent().appendingPathComponent("apply.log"))
        defer { apply.signal(SIGKILL) }
        var status: Int32 = -1
        for _ in 0..<100 where status != 0 {
            status = try runCommandStatus(usbredir, ["plan", "--detailed-exitcode", "--socket", socket, profile.path]).status
            if status != 0 { try await Task.sleep(nanoseconds: 100_000_000) }
        }
        #expect(status == 0, "apply:\n\(apply.log)")
        // An edited copy (the running apply watches the original, so it
        // cannot catch up before plan looks): only the edited entry is an update.
        let copy = profile.deletingLastPathComponent().appendingPathComponent("edited.yaml")
        try (try String(contentsOf: profile, encoding: .utf8)).replacingOccurrences(of: "X1", with: "X2")
            .write(to: copy, atomically: true, encoding: .utf8)
        #expect(try runCommandStatus(usbredir, ["plan", "--detailed-exitcode", "--socket", socket, copy.path]).status == 2)
        let edited = try JSONDecoder().decode(Plan.self, from: Data(
            try runCommandStatus(usbredir, ["plan", "--json", "--socket", socket, copy.path]).output.utf8))
        #expect(edited.assignments.map(\.action) == [.keep, .keep, .update])
        apply.signal(SIGTERM)
        #expect(await apply.waitForExit(timeout: 10) == 0)
    }
}

extension CommandLineTests {
    /// Root may write anything, so the check runs as nobody (setpriv).
    @Test(.requires(.all(.root, .setpriv)))
    func validateRefusesAWritableStickOnAnImageItCannotWrite() throws {
        let dir = try makeTemporaryDirectory("usbredir-cli-ro")
        let image = dir.appendingPathComponent("ro.img").path
        try runCommand("/bin/dd", ["if=/dev/zero", "of=\(image)", "bs=1k", "count=64", "status=none"])
        let profile = dir.appendingPathComponent("p.yaml")
        try """
            version: 1
            endpoints:
              vm: {spice: 127.0.0.1:5930}
            devices:
              - name: stick
                to: vm
                virtual: {kind: mass-storage, image: ro.img, read-only: false}
            """.write(to: profile, atomically: true, encoding: .utf8)
        try runCommand("/bin/chmod", ["755", dir.path])
        try runCommand("/bin/chmod", ["444", image])
        try runCommand("/bin/chmod", ["644", profile.path])
        let asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups", usbredir, "validate", profile.path]
        let r = try runCommandStatus("/usr/bin/setpriv", asNobody)
        #expect(r.status == 65, "\(r.output)")
        #expect(r.output.contains("p.yaml:7:42: error: image file is not writable"), "\(r.output)")
    }
}
