import Devices
import Foundation
import NIOCore
import Session
import Testing
import TestSupport
import USBRedirProtocol

/// Cancel as usbredir's own host has it (issue 20, item 3): every cancelled
/// transfer is answered exactly once, queued or running; a packet id the VM
/// reuses after a cancel (QEMU does, after a stall) is a new transfer with
/// its own reply; the replies of one endpoint leave in the order its packets
/// came, whatever order the device finishes them in; and a peer that leaves
/// the budget full and disconnects ends its session.
@Suite("CancelSemanticsTests", .timeLimit(.minutes(2)))
struct CancelSemanticsTests {
    static let success = USBRedirStatus.success.rawValue, cancelled = USBRedirStatus.cancelled.rawValue

    @Test func cancellingTheRunningTransferNeverStartsAQueuedOneThatWasCancelledToo() async throws {
        let device = SlowDevice()
        let (rig, _) = try await Rig.connected(device)
        let peer = rig.peer
        try await peer.sendBulkIn(endpoint: 0x81, length: 64, id: 1)
        try await eventually("transfer 1 is in the device") { await device.pendingCount == 1 }
        try await peer.sendBulkIn(endpoint: 0x81, length: 64, id: 2)
        try await peer.barrier(id: 3)   // 2 waits behind 1
        // The queued one first, then the running one: when 1 ends, 2 must be
        // answered as cancelled, not handed to the device.
        try await peer.sendAll([(.cancelDataPacket, id: 2), (.cancelDataPacket, id: 1)])
        #expect(try await peer.bulkReply(id: 1).status == Self.cancelled)
        #expect(try await peer.bulkReply(id: 2).status == Self.cancelled)
        #expect(await device.startedCount == 1, "the cancelled transfer 2 reached the device")
        #expect(await device.pendingCount == 0)
        // The endpoint still works.
        try await peer.sendBulkIn(endpoint: 0x81, length: 64, id: 4)
        try await eventually("transfer 4 is in the device") { await device.pendingCount == 1 }
        await device.releaseAll()
        #expect(try await peer.bulkReply(id: 4).status == Self.success)
        try await rig.finish()
    }

    @Test func aPacketIDReusedRightAfterItsCancelGetsBothReplies() async throws {
        let device = SlowDevice()
        let (rig, _) = try await Rig.connected(device)
        let peer = rig.peer
        // QEMU after a stall: cancel the running transfer and submit a new one
        // under the same id before the cancel's reply is in. Several rounds,
        // so the cancel's completion races the new submission every way.
        for round in 0..<20 {
            let id = UInt64(100 + round)
            try await peer.sendBulkIn(endpoint: 0x81, length: 64, id: id)
            try await eventually("round \(round): the transfer is in the device") { await device.pendingCount == 1 }
            try await peer.sendAll([
                (.cancelDataPacket, id: id),
                (.bulkPacket(.init(endpoint: 0x81, status: 0, length: 64, streamID: 0)), id: id),
            ])
            #expect(try await peer.bulkReply(id: id).status == Self.cancelled, "round \(round): the first reply")
            try await eventually("round \(round): the new transfer is in the device") { await device.pendingCount == 1 }
            await device.releaseAll()
            let second = try await peer.bulkReply(id: id)
            #expect(second.status == Self.success && second.length == 64, "round \(round): the second reply")
        }
        try await rig.finish()
    }

    @Test func repliesOfOneEndpointLeaveInTheOrderItsPacketsCame() async throws {
        let device = QueueingModel()
        let (rig, _) = try await Rig.connected(device)
        let peer = rig.peer
        let ids: [UInt64] = [11, 12, 13, 14]
        try await peer.sendAll(ids.map { (.bulkPacket(.init(endpoint: QueueingModel.bulkOut, status: 0, length: 8, streamID: 0,
                                                             data: ByteBuffer(repeating: 1, count: 8))), id: $0) })
        try await eventually("four writes are in the device") { device.inFlight(QueueingModel.bulkOut) == 4 }
        // The device ends 13 (cancelled) before 11 and 12: its reply waits for theirs.
        try await peer.send(.cancelDataPacket, id: 13)
        try await eventually("13 left the device") { device.inFlight(QueueingModel.bulkOut) == 3 }
        try await peer.barrier(id: 20)
        #expect(await peer.packets(.bulkPacket).isEmpty, "a reply overtook an earlier packet of its endpoint")
        while device.completeOldest(QueueingModel.bulkOut) {}
        for id in ids { _ = try await peer.bulkReply(id: id) }
        let order = await peer.packets(.bulkPacket).map(\.packet.id)
        #expect(order == ids)
        let statuses = await peer.packets(.bulkPacket).map { p -> UInt8 in
            if case .bulkPacket(let b) = p.packet.message { b.status } else { 255 }
        }
        #expect(statuses == [Self.success, Self.success, Self.cancelled, Self.success])
        try await rig.finish()
    }

    @Test func aPeerThatFillsTheBudgetAndDisconnectsEndsTheSession() async throws {
        let device = SlowDevice()
        let (rig, _) = try await Rig.connected(device, name: "wedge")
        // More transfers than the session takes at once, none answered: the
        // session stops reading at its bound...
        let count = SessionLimits().maxTransfersInFlight + 8
        try await rig.peer.sendAll((0..<count).map {
            (.bulkPacket(.init(endpoint: 0x81, status: 0, length: 64, streamID: 0)), id: UInt64(1000 + $0))
        })
        try await eventually("the first transfer is in the device") { await device.pendingCount == 1 }
        // ...and must still see the peer leave.
        rig.peer.close()
        #expect(try await rig.end(timeout: 5) == .transportClosed(.closedByPeer))
        #expect(await rig.session.counters.transfersInFlight == 0, "the transfers held were not accounted for")
        try await eventually("the device's transfer was cancelled") { await device.pendingCount == 0 }
    }
}
