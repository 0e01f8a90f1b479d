import Foundation
import Testing
import TestSupport

/// Issue 10, "Prove it" 4: the short soak (2 minutes of scripts/soak.sh:
/// two guests reading four sticks over SPICE while VMs restart and the
/// profile is edited). The 30-minute run is `bash scripts/soak.sh`.
@Suite(.serialized, .requires(.qemu), .timeLimit(.minutes(6)))
struct SoakTests {
    @Test func twoMinutesOfRestartsAndEditsKeepEverySessionServed() throws {
        let log = try makeTemporaryDirectory("usbredir-soak")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../scripts/soak.sh").standardizedFileURL.path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [script]
        var env = ProcessInfo.processInfo.environment
        env["SOAK_SECONDS"] = "120"
        env["USBREDIR"] = builtProduct("usbredir")
        env["SOAK_OUT"] = log.path
        p.environment = env
        let pipe = Pipe()
        p.standardError = pipe
        p.standardOutput = pipe
        try p.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        while p.isRunning { Thread.sleep(forTimeInterval: 0.01) }   // waitUntilExit can hang here
        print(output.split(separator: "\n").filter { $0.hasPrefix("[soak") }.joined(separator: "\n"))
        #expect(p.terminationStatus == 0, "soak failed:\n\(output.suffix(3000))")
    }
}
