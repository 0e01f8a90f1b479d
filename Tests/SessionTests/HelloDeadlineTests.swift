import Devices
import Foundation
import Session
import Testing
import TestSupport

/// Issue 10, finding 6: a peer that connects and never sends hello must not
/// hold the channel (before, `run` waited for it for ever).
@Suite(.timeLimit(.minutes(1))) struct HelloDeadlineTests {
    @Test func aSilentPeerIsDisconnectedAfterTheHelloDeadline() async throws {
        var limits = SessionLimits()
        limits.helloTimeoutNanoseconds = 300_000_000
        let rig = try await Rig.start(SourceSinkDevice(serial: "S"), limits: limits)
        // The peer says nothing at all.
        let start = Date()
        let end = await rig.run.value
        let seconds = Date().timeIntervalSince(start)
        print("silent peer dropped after \(String(format: "%.2f", seconds)) s: \(end)")
        #expect(end == .protocolError("no usbredir hello within 0.3 s"))
        #expect(seconds < 5)
    }

    @Test func aPeerThatSaysHelloInTimeIsServed() async throws {
        var limits = SessionLimits()
        limits.helloTimeoutNanoseconds = 300_000_000
        let (rig, _) = try await Rig.connected(SourceSinkDevice(serial: "S"), limits: limits)
        try await Task.sleep(nanoseconds: 600_000_000)   // past the deadline: it no longer applies
        let reply = try await rig.peer.bulkIn(endpoint: 0x81, length: 63, id: 7)
        #expect(reply.status == 0 && reply.data?.readableBytes == 63)
        rig.run.cancel()
    }
}
