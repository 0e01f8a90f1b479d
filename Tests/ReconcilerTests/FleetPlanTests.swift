import Foundation
import Reconciler
import Testing
import TestSupport

/// The fleet workflow (issue 11): one profile, a plan per machine with
/// `plan --host`, from a machine that is neither of them.
@Suite(.timeLimit(.minutes(2))) struct FleetPlanTests {
    let usbredir = builtProduct("usbredir")
    let fleet = Guest.repositoryRoot.appendingPathComponent("profiles/fleet.yaml").path

    /// A socket nobody serves: the plans must not compare with an apply
    /// that happens to run on this machine.
    func plan(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let socket = try makeTemporaryDirectory("usbredir-fleet").appendingPathComponent("none.sock").path
        return try runCommandStatus(usbredir, ["plan", "--socket", socket] + arguments + [fleet])
    }

    @Test func twoHostsOfOneProfileGetTheirOwnAssignmentsAsJSON() throws {
        func assignments(_ host: String) throws -> (host: String?, names: [String], devices: [String?]) {
            let r = try plan(["--json", "--host", host])
            #expect(r.status == 0, "\(r.output)")
            let p = try JSONDecoder().decode(Plan.self, from: Data(r.output.utf8))
            #expect(!p.runningApply)
            return (p.host, p.assignments.map(\.name), p.assignments.map(\.device))
        }
        let a = try assignments("rig-a")
        let b = try assignments("rig-b.lab.example.org")   // the short name picks the section
        #expect(a.host == "rig-a" && a.names == ["test-pattern", "installer", "jtag"])
        #expect(a.devices == ["virtual:source-sink", "virtual:mass-storage", nil])
        #expect(b.host == "rig-b" && b.names == ["test-pattern", "jtag", "scope"])
        let elsewhere = try assignments("laptop")
        #expect(elsewhere.host == nil && elsewhere.names == ["test-pattern"])
        // JSON says null, not a missing key, for no section.
        #expect(try plan(["--json", "--host", "laptop"]).output.contains("\"host\":null"))
    }

    @Test func twoHostsOfOneProfileGetTheirOwnAssignmentsAsText() throws {
        let a = try plan(["--host", "rig-a"])
        let b = try plan(["--host", "rig-b"])
        #expect(a.status == 0 && b.status == 0)
        #expect(a.output.contains("\(fleet) (host rig-a): not running"), "\(a.output)")
        #expect(b.output.contains("\(fleet) (host rig-b): not running"), "\(b.output)")
        #expect(a.output.contains("+ installer  channel auto  device virtual:mass-storage") && !a.output.contains("scope"), "\(a.output)")
        #expect(b.output.contains("+ scope  channel 1  device none present") && !b.output.contains("installer"), "\(b.output)")
        for output in [a.output, b.output] {
            #expect(output.contains("+ test-pattern  channel auto  device virtual:source-sink"))
            #expect(output.contains("endpoint flash-vm (usbredir 127.0.0.1:4000)\n  + jtag"), "\(output)")
        }
    }
}
