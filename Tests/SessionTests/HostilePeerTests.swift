import Devices
import Foundation
import NIOCore
import Session
import Testing
import TestSupport
import USBRedirProtocol

/// A usb-guest that breaks the rules (issue 10, "Prove it" 2), beyond the
/// malformed packets of SessionProtocolTests: each case ends at most its
/// own session, with a reason, and the session beside it keeps transferring.
@Suite("HostilePeerTests", .timeLimit(.minutes(2)))
struct HostilePeerTests {
    /// A neighbour session that keeps moving bulk IN data until stopped.
    struct Neighbour {
        let rig: Rig
        let progress: BusyProgress
        let task: Task<Void, Error>

        static func start() async throws -> Neighbour {
            let (rig, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-NEIGHBOUR"), name: "neighbour")
            let progress = BusyProgress()
            let task = Task {
                var id: UInt64 = 1
                while await !progress.stopped {
                    let r = try await rig.peer.bulkIn(endpoint: 0x81, length: 16 * 1024, id: id)
                    guard r.status == 0, isSourceSinkPattern(r.data) else { throw PeerError(description: "bad reply \(id)") }
                    await progress.bump()
                    id += 1
                }
            }
            try await eventually("the neighbour is busy") { await progress.count >= 2 }
            return Neighbour(rig: rig, progress: progress, task: task)
        }

        /// It moved on after the hostile case, then stops cleanly.
        func checkAndStop() async throws {
            let now = await progress.count
            try await eventually("the neighbour moves on") { await progress.count >= now + 5 }
            await progress.stop()
            try await within(10, "the neighbour's transfers") { try await task.value }
            #expect(await rig.session.phase == .connected)
            try await rig.finish()
        }
    }

    /// A GET_DESCRIPTOR round trip: the session still answers.
    func stillAnswers(_ rig: Rig, id: UInt64) async throws {
        let r = try await rig.peer.control(requestType: 0x80, request: 6, value: 0x0100, index: 0, length: 18, id: id)
        #expect(r.status == USBRedirStatus.success.rawValue && r.length == 18)
    }

    func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    @Test func aHeaderShorterThanItsTypeNeedsEndsTheSession() async throws {
        let neighbour = try await Neighbour.start()
        let (bad, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-SHORT"), name: "short-header")
        // control_packet (100) declaring 3 bytes: its own header needs 10.
        try await bad.peer.sendRaw(le32(100) + le32(3) + [UInt8](repeating: 0, count: 8) + [0x80, 6, 0])
        guard case .protocolError(let reason) = try await bad.end() else {
            Issue.record("a short header did not end the session with a reason")
            return
        }
        print("short header: \(reason)")
        try await neighbour.checkAndStop()
    }

    @Test func aFourGiBBulkInIsRefusedWithoutAllocatingIt() async throws {
        let neighbour = try await Neighbour.start()
        let (bad, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-HUGE"), name: "huge")
        // Written by hand (our serializer refuses it): a bulk IN request with
        // 32-bit lengths, low 0xffff and high 0xffff = 4 GiB - 1, 64-bit id.
        let header: [UInt8] = [0x81, 0, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff]
        try await bad.peer.sendRaw(le32(101) + le32(UInt32(header.count)) + le32(1) + le32(0) + header)
        // Refused either way, never served: a non-success reply, or the
        // session ends with its reason. The process did not try to allocate it.
        let outcome = try await within(10, "the refusal") { () -> String in
            if let reply = try? await bad.peer.bulkReply(id: 1, timeout: 2) {
                #expect(reply.status != USBRedirStatus.success.rawValue && (reply.data?.readableBytes ?? 0) == 0)
                return "status \(reply.status)"
            }
            guard case .protocolError(let reason) = try await bad.end() else { return "no reason" }
            return reason
        }
        print("4 GiB bulk IN: \(outcome)")
        #expect(outcome != "no reason")
        try await neighbour.checkAndStop()
    }

    @Test func idsReusedWhileInFlightDoNotBreakTheSession() async throws {
        let device = SlowDevice()
        let (rig, _) = try await Rig.connected(device, name: "reused-ids")
        for ep in SlowDevice.slowEndpoints { try await rig.peer.sendBulkIn(endpoint: ep, length: 64, id: 42) }
        try await eventually("the slow transfers reach the device") { await device.pendingCount >= 2 }
        try await rig.peer.send(.cancelDataPacket, id: 42)
        try await stillAnswers(rig, id: 43)
        try await rig.finish()
    }

    @Test func aFloodOfCancelsIsHarmless() async throws {
        let neighbour = try await Neighbour.start()
        let (rig, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-CANCELS"), name: "cancels")
        var flood = ByteBuffer()
        let negotiation = await rig.peer.negotiation
        for id in 0..<20_000 {
            try flood.writeUSBRedirPacket(USBRedirPacket(id: UInt64(id) &* 7919, .cancelDataPacket), negotiation: negotiation)
        }
        try await rig.peer.sendRaw(flood)
        try await stillAnswers(rig, id: 1_000_000)
        try await rig.finish()
        try await neighbour.checkAndStop()
    }

    @Test func aPeerThatDisconnectsMidMessageEndsOnlyItsSession() async throws {
        let neighbour = try await Neighbour.start()
        let (bad, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-CUT"), name: "cut")
        // Half a bulk packet header, then gone.
        try await bad.peer.sendRaw(le32(101) + le32(8))
        bad.peer.close()
        #expect(try await bad.end() == .transportClosed(.closedByPeer))
        try await neighbour.checkAndStop()
    }
}
