#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Reconciler
import Testing
import TestSupport

/// `usbredir status --watch` (issue 11).
@Suite(.serialized, .timeLimit(.minutes(2))) struct StatusWatchTests {
    let usbredir = builtProduct("usbredir")

    func session(_ name: String, profile: String = "lab", bytesIn: Int, bytesOut: Int) throws -> AssignmentStatus {
        let json = """
            {"name": "\(name)", "profile": "\(profile)", "endpoint": "e", "channel": null, "device": null,
             "state": "connected", "since": "", "bytes_in": \(bytesIn), "transfers_in": 0, "bytes_out": \(bytesOut),
             "transfers_out": 0, "last_error": null, "desired_digest": ""}
            """
        return try JSONDecoder().decode(AssignmentStatus.self, from: Data(json.utf8))
    }

    @Test func ratesAreCounterDeltasOverTheTimeBetweenPolls() throws {
        var meter = ThroughputMeter()
        #expect(meter.update([try session("a", bytesIn: 1000, bytesOut: 0)], at: 10) == [nil])
        let rates = meter.update([try session("b", bytesIn: 5, bytesOut: 5), try session("a", bytesIn: 5000, bytesOut: 2048)], at: 12)
        #expect(rates == [nil, .init(bytesInPerSecond: 2000, bytesOutPerSecond: 1024)])
        // Same name in another profile is another session; a counter that went down restarts from zero.
        let after = meter.update([try session("a", bytesIn: 100, bytesOut: 2048), try session("a", profile: "other", bytesIn: 1, bytesOut: 1)], at: 14)
        #expect(after == [.init(bytesInPerSecond: 50, bytesOutPerSecond: 0), nil])
        #expect(ThroughputMeter.format(nil) == "-")
        #expect(ThroughputMeter.format(512) == "512 B/s")
        #expect(ThroughputMeter.format(1536) == "1.5 KiB/s")
        #expect(ThroughputMeter.format(98.25 * 1024 * 1024) == "98.2 MiB/s")
    }

    @Test func watchingIntoAPipeAppendsLinesWithRatesOnATerminalRedrawsAndEndsWith0OnSIGINTAndSIGTERM() async throws {
        let dir = try makeTemporaryDirectory("usbredir-watch")
        let profile = dir.appendingPathComponent("lab.yaml")
        try "version: 1\nendpoints:\n  e: {listen: 127.0.0.1:\(freeLoopbackPort())}\ndevices:\n  - {name: gadget, to: e, virtual: {kind: source-sink}}\n"
            .write(to: profile, atomically: true, encoding: .utf8)
        let socket = dir.appendingPathComponent("s.sock").path
        let apply = try BackgroundProcess(usbredir, ["apply", "--socket", socket, profile.path],
                                          logFile: dir.appendingPathComponent("apply.log"))
        defer { apply.signal(SIGKILL) }
        try await waitFor("the status socket", timeout: 20) {
            (try? runCommandStatus(usbredir, ["status", "--json", "--socket", socket]).status) == 0
        }
        for stop in [SIGINT, SIGTERM] {
            let watch = try BackgroundProcess(usbredir, ["status", "--watch", "--interval", "0.2", "--socket", socket],
                                              logFile: dir.appendingPathComponent("watch-\(stop).log"))
            defer { watch.signal(SIGKILL) }
            // A file is not a terminal: no escape sequences, one line per session and poll.
            let rated = #/^\S+Z  gadget  \S+  \d+ B/s  \d+ B/s  virtual:source-sink/#
            try await waitFor("three polls with rates", timeout: 20) {
                watch.log.split(separator: "\n").filter { $0.firstMatch(of: rated) != nil }.count >= 3
            }
            let lines = watch.log.split(separator: "\n").map(String.init)
            #expect(lines.first?.hasPrefix("TIME") == true && lines.first?.contains("IN/S") == true, "\(watch.log)")
            #expect(!watch.log.contains("\u{1B}"), "escape sequences in a pipe: \(watch.log)")
            #expect(lines.dropFirst().first?.contains("gadget") == true, "\(watch.log)")
            watch.signal(stop)
            #expect(await watch.waitForExit(timeout: 10) == 0, "signal \(stop): \(watch.log)")
        }
        // On a terminal (script(1) gives it one): the table is redrawn in place.
        if let script = findExecutable("script"), let timeout = findExecutable("timeout") {
            let r = try runCommandStatus(timeout, ["-s", "INT", "1.5", script, "-qc",
                                                   "\(usbredir) status --watch --interval 0.2 --socket \(socket)", "/dev/null"])
            let redraws = r.output.components(separatedBy: "\u{1B}[H\u{1B}[2J").count - 1
            #expect(redraws >= 3, "\(r.output)")
            #expect(r.output.contains("IN/S") && r.output.contains("gadget") && !r.output.contains("Z  gadget"), "\(r.output)")
        } else {
            try Requirement.tool("script", hint: "Debian package bsdutils").require()
        }
        #expect(try runCommandStatus(usbredir, ["status", "--interval", "2"]).status == 64)
        apply.signal(SIGTERM)
        #expect(await apply.waitForExit(timeout: 10) == 0)
    }
}
