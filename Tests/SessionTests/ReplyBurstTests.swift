import Devices
import NIOCore
import Session
import Testing
import USBRedirProtocol

/// The replies the engine makes while it handles one read go to the
/// connection together (one write, one syscall on a socket), not one by one.
/// (That a held burst never holds back replies the reader waits for is
/// SessionBudgetTests' and transfersInFlightStayWithinTheBound's to show.)
@Suite("ReplyBurstTests", .timeLimit(.minutes(1)))
struct ReplyBurstTests {
    @Test("eight requests in one read are answered in one write")
    func oneReadIsAnsweredInOneWrite() async throws {
        let (rig, _) = try await Rig.connected(SourceSinkDevice(serial: "BURST"))
        let before = rig.peer.toPeer.chunksRead
        let requests = (1...8).map { id in
            (USBRedirMessage.bulkPacket(.init(endpoint: SourceSinkDevice.bulkIn, status: 0, length: 512, streamID: 0)),
             id: UInt64(id))
        }
        try await rig.peer.sendAll(requests)
        for id in 1...8 {
            let reply = try await rig.peer.bulkReply(id: UInt64(id))
            #expect(reply.status == 0 && reply.data?.readableBytes == 512)
        }
        #expect(rig.peer.toPeer.chunksRead - before == 1, "the eight replies came in \(rig.peer.toPeer.chunksRead - before) writes")
        try await rig.finish()
    }
}
