import Devices
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing
import Session
import USBRedirProtocol

/// A device that queues transfers per endpoint, as the kernel does for
/// libusb: what is started stays in the device until the test completes it,
/// in order. It counts how many of one endpoint were in it at once.
final class QueueingModel: USBDevice, Sendable {
    static let bulkIn: UInt8 = 0x81, bulkOut: UInt8 = 0x02, isoIn: UInt8 = 0x83

    final class Started: USBCancellableTransfer, Sendable {
        let endpoint: UInt8, length: Int, sequence: Int
        let completion: @Sendable (USBTransferResult) -> Void
        private let model: QueueingModel
        init(_ endpoint: UInt8, _ length: Int, _ sequence: Int, _ model: QueueingModel,
             _ completion: @escaping @Sendable (USBTransferResult) -> Void) {
            (self.endpoint, self.length, self.sequence, self.model, self.completion) = (endpoint, length, sequence, model, completion)
        }
        func cancel() { model.finish(self, .failed(.cancelled)) }
    }

    private struct State {
        var inFlight: [Started] = []
        var started = 0
        var mostAtOnce: [UInt8: Int] = [:]
    }

    let descriptor: USBDeviceDescriptor
    let speed = USBSpeed.high
    private let configuration: USBConfigurationDescriptor
    private let state = NIOLockedValueBox(State())

    init() {
        var d = USBDeviceDescriptor(vendorID: 0x1d6b, productID: 0x5101)
        d.product = "queueing model"
        descriptor = d
        let i = USBInterfaceDescriptor(number: 0, interfaceClass: 0xff, interfaceSubclass: 0, interfaceProtocol: 0, endpoints: [
            .init(address: Self.bulkIn, type: .bulk, maxPacketSize: 512),
            .init(address: Self.bulkOut, type: .bulk, maxPacketSize: 512),
            .init(address: Self.isoIn, type: .isochronous, maxPacketSize: 192, interval: 1),
        ])
        configuration = .init(value: 1, interfaces: [i])
    }

    /// The most transfers of `endpoint` the device held at once.
    func mostAtOnce(_ endpoint: UInt8) -> Int { state.withLockedValue { $0.mostAtOnce[endpoint] ?? 0 } }
    func inFlight(_ endpoint: UInt8) -> Int { state.withLockedValue { $0.inFlight.filter { $0.endpoint == endpoint }.count } }

    var queuesTransfers: Bool { true }

    func submit(_ request: USBTransferRequest,
                completion: @escaping USBTransferCompletion) -> (any USBCancellableTransfer)? {
        switch request {
        case .control:
            completion(.failed(.stall))
            return nil
        case .data(let endpoint, let length, let data, _), .isochronous(let endpoint, let length, let data):
            return start(endpoint: endpoint, length: length, data: data, completion: completion)
        }
    }

    private func start(endpoint: UInt8, length: Int, data: ByteBuffer?,
                       completion: @escaping USBTransferCompletion) -> (any USBCancellableTransfer)? {
        guard configuration.interfaces[0].endpoints.contains(where: { $0.address == endpoint }) else {
            completion(.failed(.invalid))
            return nil
        }
        return state.withLockedValue { s in
            let t = Started(endpoint, endpoint & 0x80 != 0 ? length : data?.readableBytes ?? 0, s.started, self, completion)
            s.started += 1
            s.inFlight.append(t)
            s.mostAtOnce[endpoint] = max(s.mostAtOnce[endpoint] ?? 0, s.inFlight.filter { $0.endpoint == endpoint }.count)
            return t
        }
    }

    /// Completes the oldest transfer of `endpoint`: IN with `length` bytes
    /// of its start's sequence number, OUT with all it had. False when none.
    @discardableResult
    func completeOldest(_ endpoint: UInt8) -> Bool {
        guard let t = state.withLockedValue({ $0.inFlight.first { $0.endpoint == endpoint } }) else { return false }
        finish(t, endpoint & 0x80 != 0 ? .inData(ByteBuffer(repeating: UInt8(t.sequence), count: t.length)) : .outDone(t.length))
        return true
    }

    fileprivate func finish(_ t: Started, _ result: USBTransferResult) {
        let found = state.withLockedValue { s -> Bool in
            guard let i = s.inFlight.firstIndex(where: { $0 === t }) else { return false }
            s.inFlight.remove(at: i)
            return true
        }
        if found { t.completion(result) }
    }

    var activeConfiguration: USBConfigurationDescriptor? { configuration }
    func open() async throws {}
    func close() async {
        for t in state.withLockedValue({ $0.inFlight }) { t.cancel() }
    }
    func setConfiguration(_ value: UInt8) async -> USBTransferStatus { .success }
    func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus { .success }
    func altSetting(interface: UInt8) async -> UInt8? { 0 }
    func reset() async -> USBTransferStatus { .success }
    func clearHalt(endpoint: UInt8) async -> USBTransferStatus { .success }
}

/// A queueing device (libusb) gets every transfer of an endpoint the VM has
/// in flight at once, not one after the other: the bus then has the next
/// one ready when a transfer ends, as with usbredirhost.
@Suite struct QueuedTransferTests {
    static let success = USBRedirStatus.success.rawValue, cancelled = USBRedirStatus.cancelled.rawValue

    @Test func theTransfersOfOneEndpointAreAllInTheDeviceAtOnceAndEndInOrder() async throws {
        let device = QueueingModel()
        let (rig, _) = try await Rig.connected(device)
        let peer = rig.peer
        try await peer.sendAll((1...4).map { (.bulkPacket(.init(endpoint: QueueingModel.bulkIn, status: 0, length: 512, streamID: 0)), id: UInt64($0)) })
        try await eventually("four reads are in the device at once") { device.inFlight(QueueingModel.bulkIn) == 4 }

        // An OUT meanwhile is not behind them.
        try await peer.send(.bulkPacket(.init(endpoint: QueueingModel.bulkOut, status: 0, length: 100, streamID: 0, data: ByteBuffer(repeating: 7, count: 100))), id: 5)
        try await eventually("the write is in the device") { device.inFlight(QueueingModel.bulkOut) == 1 }
        device.completeOldest(QueueingModel.bulkOut)
        let out = try await peer.bulkReply(id: 5)
        #expect(out.status == Self.success && out.length == 100)

        // cancel_data_packet reaches a queued read in the device.
        try await peer.send(.cancelDataPacket, id: 2)
        try await eventually("the cancel reached the device") { device.inFlight(QueueingModel.bulkIn) == 3 }

        // The rest end in the order they were sent, each with its own data;
        // the cancelled one's reply keeps its place (CancelSemanticsTests).
        while device.completeOldest(QueueingModel.bulkIn) {}
        for (id, sequence) in [(1, 0), (3, 2), (4, 3)] {
            let r = try await peer.bulkReply(id: UInt64(id))
            #expect(r.status == Self.success && byteArray(r.data) == Array(repeating: UInt8(sequence), count: 512))
        }
        #expect(try await peer.bulkReply(id: 2).status == Self.cancelled)
        let ids = await peer.packets(.bulkPacket).map(\.packet.id)
        #expect(ids == [5, 1, 2, 3, 4])
        #expect(device.mostAtOnce(QueueingModel.bulkIn) == 4)
        try await rig.finish()
    }

    @Test func anUnplugCancelsWhatTheDeviceHoldsAndTheBudgetComesBack() async throws {
        let device = QueueingModel()
        var limits = SessionLimits()
        limits.maxTransfersInFlight = 4
        let (rig, _) = try await Rig.connected(device, limits: limits)
        let peer = rig.peer
        try await peer.sendAll((1...4).map { (.bulkPacket(.init(endpoint: QueueingModel.bulkIn, status: 0, length: 64, streamID: 0)), id: UInt64($0)) })
        try await eventually("the budget's four reads are in the device") { device.inFlight(QueueingModel.bulkIn) == 4 }
        let session = rig.session
        let unplug = Task { await session.unplug() }
        _ = try await peer.take(.deviceDisconnect)
        try await peer.send(.deviceDisconnectAck)
        await unplug.value
        #expect(device.inFlight(QueueingModel.bulkIn) == 0, "closing the device cancelled them")

        // Plugged again: the whole budget is there for new reads.
        let again = QueueingModel()
        try await rig.session.plug(again)
        _ = try await peer.take(.deviceConnect)
        try await peer.sendAll((5...8).map { (.bulkPacket(.init(endpoint: QueueingModel.bulkIn, status: 0, length: 64, streamID: 0)), id: UInt64($0)) })
        try await eventually("four reads fit again") { again.inFlight(QueueingModel.bulkIn) == 4 }
        while again.completeOldest(QueueingModel.bulkIn) {}
        for id in 5...8 { #expect(try await peer.bulkReply(id: UInt64(id)).status == Self.success) }
        try await rig.finish()
    }

    @Test func aReceivingStreamKeepsTheReadsTheVMAskedForInTheDevice() async throws {
        let device = QueueingModel()
        let (rig, _) = try await Rig.connected(device)
        let peer = rig.peer
        let start = try await peer.request(.startBulkReceiving(.init(streamID: 0, bytesPerTransfer: 256,
                                                                     endpoint: QueueingModel.bulkIn, transferCount: 6)), id: 1)
        #expect(start.message == .bulkReceivingStatus(.init(streamID: 0, endpoint: QueueingModel.bulkIn, status: Self.success)))
        try await eventually("six reads are in the device") { device.inFlight(QueueingModel.bulkIn) == 6 }
        // Each packet that goes out is replaced at once; they go out in order.
        for sequence in 0..<9 {
            device.completeOldest(QueueingModel.bulkIn)
            let p = try await peer.take(.bufferedBulkPacket)
            guard case .bufferedBulkPacket(let m) = p.packet.message else { return }
            #expect(m.status == Self.success && byteArray(m.data) == Array(repeating: UInt8(sequence), count: 256))
            try await eventually("the stream is six deep again") { device.inFlight(QueueingModel.bulkIn) == 6 }
        }
        #expect(device.mostAtOnce(QueueingModel.bulkIn) == 6)

        try await peer.send(.stopBulkReceiving(.init(streamID: 0, endpoint: QueueingModel.bulkIn)), id: 2)
        let stop = try await peer.take(.bulkReceivingStatus, id: 2)
        try await eventually("the stop cancelled the reads in the device") { device.inFlight(QueueingModel.bulkIn) == 0 }
        try await peer.barrier(id: 3)
        #expect(await peer.packets(.bufferedBulkPacket, after: stop.index).isEmpty, "nothing after the stop's status")

        // An iso stream: URBs x packets per URB reads in the device.
        _ = try await peer.request(.startIsoStream(.init(endpoint: QueueingModel.isoIn, packetsPerURB: 4, urbCount: 2)), id: 4)
        try await eventually("eight iso reads are in the device") { device.inFlight(QueueingModel.isoIn) == 8 }
        device.completeOldest(QueueingModel.isoIn)
        let iso = try await peer.take(.isoPacket)
        guard case .isoPacket(let m) = iso.packet.message else { return }
        #expect(m.status == Self.success && m.length == 192)
        _ = try await peer.request(.stopIsoStream(.init(endpoint: QueueingModel.isoIn)), id: 5)
        try await eventually("the iso reads were cancelled") { device.inFlight(QueueingModel.isoIn) == 0 }
        try await rig.finish()
    }
}
