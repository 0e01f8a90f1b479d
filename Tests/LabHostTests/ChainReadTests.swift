import Foundation
import TestSupport
import XCTest

/// The storage read through the whole chain (issue #19, item 6): the lab
/// host's UAS stick read in the target, through `usbredir apply` and through
/// Debian's usbredirect in turn, with the MB/s of each. The UAS stick
/// because usbredirect can only pick a device by vid:pid and the two
/// usb-storage sticks share theirs. In the suite it is a short correctness
/// run (both tools read the image exactly); `make bench` runs it with the
/// release binary, a 64 MiB stick and three rounds (LABHOST_USBREDIR,
/// LABHOST_STICK_MIB, LABHOST_CHAIN_ROUNDS) and prints the ratio.
extension LabHostTests {
    func testChainReadThroughUsbredirAndUsbredirect() throws {
        let rig = try theRig()
        let rounds = Int(ProcessInfo.processInfo.environment["LABHOST_CHAIN_ROUNDS"] ?? "") ?? 1
        var ours: [Double] = [], theirs: [Double] = []
        for _ in 0..<max(1, rounds) {
            ours.append(try chainRead(rig, through: .usbredir))
            theirs.append(try chainRead(rig, through: .usbredirect))
        }
        let (o, t) = (median(ours), median(theirs))
        print("LABHOST chain read: \(LabRig.stickMiB) MiB from the lab host's UAS stick in the target, "
              + "median of \(ours.count) round(s): usbredir \(format(o)) MB/s, usbredirect \(format(t)) MB/s; "
              + "usbredir/usbredirect \(String(format: "%.2f", o / t))x (rounds: usbredir \(ours.map(format)), "
              + "usbredirect \(theirs.map(format)))")
    }

    /// Redirects the UAS stick (port 2-3, 46f4:0003) through `tool`, reads
    /// it whole in the target (timed, O_DIRECT), checks the bytes against
    /// the image, lets go; returns MB/s.
    private func chainRead(_ rig: LabRig, through tool: LabRig.Tool) throws -> Double {
        let lab = rig.lab.ctl, target = rig.target.ctl
        let size = LabRig.stickMiB << 20
        switch tool {
        case .usbredir:
            try rig.redirect("chain", match: ["port: \"2-3\""])
        case .usbredirect:
            try lab.check("usbredirect --device 46f4:0003 --to 10.0.2.2:\(rig.target.redirPorts[0]) "
                          + ">/tmp/usbredirect-chain.log 2>&1 & echo $! >/tmp/usbredirect-chain.pid")
        }
        var stopped = false
        func stop() throws {
            stopped = true
            switch tool {
            case .usbredir: XCTAssertEqual(try rig.stopApply("chain"), 0, rig.applyLog("chain"))
            case .usbredirect: try lab.check("kill $(cat /tmp/usbredirect-chain.pid)")
            }
        }
        defer { if !stopped { try? stop() } }
        let disk = LabRig.disksOfSize(size)
        try target.pollUntil("the target has the UAS disk (\(tool))", timeout: 60, every: 0.5, disk) { !$0.output.lines.isEmpty }
        let sd = try target.check(disk).lines[0]
        // Timed in the target: the read alone, not the control port's round trip.
        let timed = try target.run("""
            s=$(cat /proc/uptime); dd if=/dev/\(sd) of=/dev/null bs=1M count=\(LabRig.stickMiB) iflag=direct 2>/dev/null \
              && e=$(cat /proc/uptime) && echo "$s $e"
            """, timeout: 300)
        XCTAssertEqual(timed.status, 0, "\(tool): \(timed)")
        let marks = timed.output.split(whereSeparator: { $0 == " " || $0.isNewline }).compactMap { Double($0) }
        let hashed = try target.run("dd if=/dev/\(sd) bs=1M count=\(LabRig.stickMiB) iflag=direct 2>/dev/null | sha256sum",
                                    timeout: 300)
        XCTAssertEqual(String(hashed.output.prefix(64)), try sha256(ofFile: rig.images["UAS"]!), "\(tool) read other bytes")
        try stop()
        try target.pollUntil("the UAS disk gone from the target (\(tool))", timeout: 30, every: 0.5, disk) { $0.output.lines.isEmpty }
        // /proc/uptime has 10 ms steps: a floor keeps a tiny read finite.
        guard marks.count >= 4 else { throw ChainReadError(description: "no timing from the target: \(timed)") }
        return Double(size) / max(marks[2] - marks[0], 0.01) / 1e6
    }

    private func median(_ values: [Double]) -> Double {
        let s = values.sorted()
        return s.isEmpty ? .nan : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    private func format(_ v: Double) -> String { String(format: "%.1f", v) }
}

struct ChainReadError: Error, CustomStringConvertible {
    let description: String
}
