import Devices
import Foundation
import NIOCore
import Session
import Testing
import USBRedirProtocol

/// Issue #10, finding 10: one byte budget per session covers transfers in
/// flight, their replies until they are written, and the packets of
/// receiving streams. A peer that stops reading can then pin no more than the
/// budget, however many endpoints and streams it keeps busy.
@Suite("SessionBudgetTests", .timeLimit(.minutes(1)))
struct SessionBudgetTests {
    static let request = 64 * 1024

    @Test func repliesWaitingForAPeerThatStopsReadingCountAgainstTheBudget() async throws {
        let (rig, device, limits) = try await Self.connected()
        let peer = rig.peer
        await peer.stopReading()
        let acceptedBefore = peer.toPeer.bytesAccepted

        // Four bulk IN endpoints, four requests each; the device answers at
        // once, so only the budget holds the session back.
        let ids = try await Self.sendBulkIns(peer, endpoints: EagerDevice.bulkIn, rounds: 4)
        try await settled { [await device.bytesProduced, peer.toSession.chunksRead] }
        // What the device produced and the peer's pipe has not taken is held
        // by the session. Before the fix each endpoint's reply waiting to be
        // written was outside the budget: four of them, twice the budget.
        let held = await device.bytesProduced - (peer.toPeer.bytesAccepted - acceptedBefore)
        #expect(held <= limits.maxBytesInFlight, "held \(held) bytes, budget \(limits.maxBytesInFlight)")
        try await Self.readEverything(peer, ids)
        try await rig.finish()
    }

    @Test func aReceivingStreamCountsAgainstTheBudget() async throws {
        let (rig, device, limits) = try await Self.connected()
        let peer = rig.peer
        // Buffered bulk receiving on 0x84, one request's worth per packet.
        let start = try await peer.request(.startBulkReceiving(.init(streamID: 0, bytesPerTransfer: UInt32(Self.request),
                                                                     endpoint: 0x84, transferCount: 1)), id: 900)
        guard case .bulkReceivingStatus(let status) = start.message else { throw PeerError(description: "\(start)") }
        #expect(status.status == 0)
        _ = try await peer.take(.bufferedBulkPacket)
        await peer.stopReading()
        try await settled { [await device.bytesProduced] }
        let acceptedBefore = peer.toPeer.bytesAccepted
        let producedBefore = await device.bytesProduced
        let ids = try await Self.sendBulkIns(peer, endpoints: [0x81, 0x82, 0x83], rounds: 2)
        try await settled { [await device.bytesProduced, peer.toSession.chunksRead] }
        // The stream holds one packet for the blocked peer: with it counted,
        // one bulk reply fits beside it; uncounted, two did (1.5x the budget).
        let heldByStream = Self.request
        let held = heldByStream + (await device.bytesProduced - producedBefore)
            - (peer.toPeer.bytesAccepted - acceptedBefore)
        #expect(held <= limits.maxBytesInFlight, "held \(held) bytes, budget \(limits.maxBytesInFlight)")
        try await Self.readEverything(peer, ids)
        try await rig.finish()
    }

    /// A session over an EagerDevice with a budget of two requests.
    static func connected() async throws -> (Rig, EagerDevice, SessionLimits) {
        var limits = SessionLimits()
        limits.maxBytesInFlight = 2 * request
        let device = EagerDevice()
        let (rig, _) = try await Rig.connected(device, limits: limits)
        return (rig, device, limits)
    }

    static func sendBulkIns(_ peer: GuestPeer, endpoints: [UInt8], rounds: Int) async throws -> [UInt64] {
        var ids: [UInt64] = []
        for _ in 0..<rounds {
            for endpoint in endpoints {
                let id = UInt64(ids.count + 1)
                try await peer.sendBulkIn(endpoint: endpoint, length: UInt32(request), id: id)
                ids.append(id)
            }
        }
        return ids
    }

    /// The peer reads again: every reply arrives, in full.
    static func readEverything(_ peer: GuestPeer, _ ids: [UInt64]) async throws {
        await peer.startReading()
        for id in ids {
            let reply = try await peer.bulkReply(id: id)
            #expect(reply.status == 0 && reply.data?.readableBytes == request)
        }
    }

    /// Waits until `sample` stops changing (three equal readings 100 ms
    /// apart): the session has gone as far as its bounds let it.
    private func settled(_ sample: () async -> [Int]) async throws {
        var last = await sample()
        var same = 0
        for _ in 0..<100 where same < 3 {
            try await Task.sleep(nanoseconds: 100_000_000)
            let now = await sample()
            same = now == last ? same + 1 : 0
            last = now
        }
        #expect(same >= 3, "the session never settled")
    }
}

/// Bulk IN 0x81-0x84 that answer at once, with as many bytes as asked; it
/// counts what it produced.
actor EagerDevice: ActorTestDevice {
    static let bulkIn: [UInt8] = [0x81, 0x82, 0x83, 0x84]

    nonisolated let descriptor: USBDeviceDescriptor
    nonisolated let speed: USBSpeed = .high
    private var state: TestDeviceState
    private(set) var bytesProduced = 0

    init() {
        var d = USBDeviceDescriptor(vendorID: 0x1d6b, productID: 0x5200)
        d.product = "eager model"
        descriptor = d
        let eps = Self.bulkIn.map { USBEndpointDescriptor(address: $0, type: .bulk, maxPacketSize: 512) }
        let i = USBInterfaceDescriptor(number: 0, interfaceClass: 0xff, interfaceSubclass: 0, interfaceProtocol: 0,
                                       endpoints: eps)
        state = TestDeviceState(descriptor: d, configuration: .init(value: 1, interfaces: [i]))
    }

    var activeConfiguration: USBConfigurationDescriptor? { state.active }
    func open() async throws {}
    func close() async {}
    func setConfiguration(_ value: UInt8) async -> USBTransferStatus { state.setConfiguration(value) }
    func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus {
        state.setAltSetting(interface: interface, alt: alt)
    }
    func altSetting(interface: UInt8) async -> UInt8? { state.alt[interface] ?? 0 }
    func reset() async -> USBTransferStatus { .success }
    func clearHalt(endpoint: UInt8) async -> USBTransferStatus { .success }
    func answerControl(_ setup: USBSetupPacket, data: ByteBuffer?) async -> USBTransferResult { state.control(setup) }
    func answerIso(endpoint: UInt8, length: Int, data: ByteBuffer?) async -> USBTransferResult { .failed(.invalid) }

    func answerTransfer(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32) async -> USBTransferResult {
        guard Self.bulkIn.contains(endpoint) else { return .failed(.invalid) }
        bytesProduced += length
        return .inData(ByteBuffer(repeating: 0x5a, count: length))
    }
}
