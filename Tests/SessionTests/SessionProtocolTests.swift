import Devices
import Foundation
import NIOCore
import Session
import Testing
import TestSupport
import Transport
import USBRedirProtocol

// The session engine against a usb-guest peer built on our own protocol
// module (GuestPeer) and device models written for the tests. These cover
// what no real peer on this machine exercises: QEMU asks for isochronous
// streams, buffered bulk receiving and bulk streams only for real devices
// that have them. The end-to-end suite (a Linux guest) is
// VirtualStickEndToEndTests.

/// A session serving one device to one GuestPeer.
struct Rig {
    let session: RedirectionSession
    let peer: GuestPeer
    let run: Task<SessionEnd, Never>

    static func start(_ device: (any USBDevice)?, name: String = "rig", caps: USBRedirCapabilities = .all,
                      limits: SessionLimits = SessionLimits()) async throws -> Rig {
        let session = RedirectionSession(name: name, logger: testLogger, limits: limits)
        if let device { try await session.plug(device) }
        let peer = GuestPeer(name: name, capabilities: caps)
        return Rig(session: session, peer: peer, run: peer.serve(session))
    }

    /// Starts and completes the handshake.
    static func connected(_ device: (any USBDevice)?, name: String = "rig", caps: USBRedirCapabilities = .all,
                          limits: SessionLimits = SessionLimits()) async throws -> (Rig, Handshake) {
        let rig = try await start(device, name: name, caps: caps, limits: limits)
        let hs = try await rig.peer.connect(expectDevice: device != nil)
        return (rig, hs)
    }

    /// The session's result once it ended on its own.
    func end(timeout: Double = 5) async throws -> SessionEnd {
        let run = self.run
        return try await within(timeout, "session.run") { await run.value }
    }

    /// Closes the peer's side; `run` must then end cleanly with closedByPeer,
    /// and the peer must have seen only valid usbredir.
    func finish() async throws {
        let hostError = await peer.hostError
        #expect(hostError == nil, "host sent malformed usbredir: \(String(describing: hostError))")
        peer.close()
        #expect(try await end() == .transportClosed(.closedByPeer))
    }
}

actor BusyProgress {
    private(set) var count = 0
    private(set) var stopped = false
    func bump() { count += 1 }
    func stop() { stopped = true }
}

/// byte i = i % 63, checked independently of SourceSinkDevice.pattern.
func isSourceSinkPattern(_ b: ByteBuffer?) -> Bool {
    guard let b else { return false }
    return b.withUnsafeReadableBytes { raw in
        var k = 0
        for byte in raw {
            if byte != UInt8(k) { return false }
            k = k == 62 ? 0 : k + 1
        }
        return true
    }
}

func byteArray(_ b: ByteBuffer?) -> [UInt8] {
    guard var b else { return [] }
    return b.readBytes(length: b.readableBytes) ?? []
}

func epIndex(_ endpoint: UInt8) -> Int { usbRedirEndpointIndex(endpoint) }

extension USBRedirPacket {
    var controlStatus: UInt8? { if case .controlPacket(let p) = message { p.status } else { nil } }
}

@Suite("SessionProtocolTests", .timeLimit(.minutes(2)))
struct SessionProtocolTests {
    static let status = (success: USBRedirStatus.success.rawValue, cancelled: USBRedirStatus.cancelled.rawValue,
                         invalid: USBRedirStatus.invalid.rawValue, stall: USBRedirStatus.stall.rawValue)

    // MARK: Connect sequence

    @Test func connectSequenceAnnouncesTheDeviceOnlyAfterThePeersHello() async throws {
        let rig = try await Rig.start(SourceSinkDevice(serial: "SS-CONNECT"))
        // The session is blocked reading, with the device plugged: it has done
        // everything it would do before the peer's hello, and sent nothing.
        try await eventually("the session waits for the peer") { rig.peer.toSession.readerIsWaiting }
        #expect(await rig.peer.bytesReceived == 0)
        #expect(await rig.session.phase == .connecting)

        let hs = try await rig.peer.connect()
        // Exactly hello, interface_info, ep_info, device_connect, in that order.
        #expect(hs.order == [0, 1, 2, 3])
        #expect(hs.hello.capabilities == USBRedirCapabilities.all)
        for cap in [USBRedirCapability.epInfoMaxPacketSize, .ids64Bit, .bulkLength32Bit] {
            #expect(hs.hello.capabilities.contains(cap), "hello lacks \(cap)")
        }
        let ii = try #require(hs.interfaceInfo)
        #expect(ii.interfaceCount == 1)
        #expect(ii.interface[0] == 0 && ii.interfaceClass[0] == 0xff)

        let ep = try #require(hs.epInfo)
        let bulk = USBRedirEndpointType.bulk.rawValue, intr = USBRedirEndpointType.interrupt.rawValue
        #expect(ep.type[epIndex(0x81)] == bulk && ep.type[epIndex(0x02)] == bulk && ep.type[epIndex(0x83)] == intr)
        #expect(ep.maxPacketSize[epIndex(0x81)] == 512 && ep.maxPacketSize[epIndex(0x02)] == 512
                && ep.maxPacketSize[epIndex(0x83)] == 64)
        #expect(ep.interval[epIndex(0x83)] == 4)
        #expect(ep.interface[epIndex(0x81)] == 0 && ep.interface[epIndex(0x83)] == 0)
        #expect(ep.type[0] == USBRedirEndpointType.control.rawValue && ep.type[16] == USBRedirEndpointType.control.rawValue)
        #expect(ep.maxPacketSize[0] == 64)
        let used: Set<Int> = [0, 16, epIndex(0x81), epIndex(0x02), epIndex(0x83)]
        for i in 0..<32 where !used.contains(i) {
            #expect(ep.type[i] == USBRedirEndpointType.invalid.rawValue, "endpoint index \(i) should be invalid")
        }

        let dc = try #require(hs.deviceConnect)
        #expect(dc.speed == USBRedirSpeed.high.rawValue)
        #expect(dc.vendorID == 0x0525 && dc.productID == 0xa4a0)
        #expect(dc.deviceClass == 0 && dc.deviceVersionBCD == 0x0100)
        #expect(await rig.session.phase == .connected)
        try await rig.finish()
    }

    // MARK: Control

    @Test func controlRequestsAnswerDescriptorsStallsAndConfiguration() async throws {
        let device = SourceSinkDevice(serial: "SS0001")
        let (rig, _) = try await Rig.connected(device)
        let peer = rig.peer

        let dev = try await peer.control(requestType: 0x80, request: 6, value: 0x0100, index: 0, length: 18, id: 1)
        #expect(dev.status == Self.status.success)
        #expect(dev.length == 18)
        #expect(byteArray(dev.data) == [18, 1, 0x00, 0x02, 0, 0, 0, 64, 0x25, 0x05, 0xa0, 0xa4, 0x00, 0x01, 1, 2, 3, 1])

        let config: [UInt8] = [9, 2, 39, 0, 1, 1, 0, 0x80, 50,
                               9, 4, 0, 0, 3, 0xff, 0, 0, 0,
                               7, 5, 0x81, 2, 0x00, 0x02, 0,
                               7, 5, 0x02, 2, 0x00, 0x02, 0,
                               7, 5, 0x83, 3, 64, 0, 4]
        let cfgHead = try await peer.control(requestType: 0x80, request: 6, value: 0x0200, index: 0, length: 9, id: 2)
        #expect(byteArray(cfgHead.data) == Array(config.prefix(9)))
        let cfg = try await peer.control(requestType: 0x80, request: 6, value: 0x0200, index: 0, length: 255, id: 3)
        #expect(byteArray(cfg.data) == config)
        #expect(cfg.length == 39)

        let langs = try await peer.control(requestType: 0x80, request: 6, value: 0x0300, index: 0, length: 255, id: 4)
        #expect(byteArray(langs.data) == [4, 3, 0x09, 0x04])
        let product = try await peer.control(requestType: 0x80, request: 6, value: 0x0302, index: 0x0409, length: 255, id: 5)
        #expect(byteArray(product.data) == [24, 3] + "Source/Sink".utf16.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] })
        let serial = try await peer.control(requestType: 0x80, request: 6, value: 0x0303, index: 0x0409, length: 255, id: 6)
        #expect(byteArray(serial.data) == [14, 3] + "SS0001".utf16.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] })

        // An unknown vendor request and a missing string stall.
        let vendor = try await peer.control(requestType: 0xc0, request: 0x5a, value: 0, index: 0, length: 8, id: 7)
        #expect(vendor.status == Self.status.stall)
        #expect(vendor.length == 0 && byteArray(vendor.data).isEmpty)
        let noString = try await peer.control(requestType: 0x80, request: 6, value: 0x0309, index: 0x0409, length: 255, id: 8)
        #expect(noString.status == Self.status.stall)
        // An OUT request without data (SET_FEATURE ENDPOINT_HALT on 0x81, then CLEAR_FEATURE).
        let halt = try await peer.control(requestType: 0x02, request: 3, value: 0, index: 0x81, length: 0, id: 9)
        #expect(halt.status == Self.status.success)
        let halted = try await peer.bulkIn(endpoint: 0x81, length: 64, id: 10)
        #expect(halted.status == Self.status.stall)
        _ = try await peer.control(requestType: 0x02, request: 1, value: 0, index: 0x81, length: 0, id: 11)
        #expect(try await peer.bulkIn(endpoint: 0x81, length: 64, id: 12).status == Self.status.success)

        // set_configuration: interface_info and ep_info, then the status with the request's id.
        try await peer.send(.setConfiguration(.init(configuration: 0)), id: 100)
        let ii0 = try await peer.take(.interfaceInfo)
        let ep0 = try await peer.take(.epInfo)
        let st0 = try await peer.take(.configurationStatus, id: 100)
        #expect(ii0.index < ep0.index && ep0.index < st0.index)
        guard case .interfaceInfo(let unconfigured) = ii0.packet.message,
              case .configurationStatus(let s0) = st0.packet.message else { Issue.record("wrong messages"); return }
        #expect(unconfigured.interfaceCount == 0)
        #expect(s0.status == Self.status.success && s0.configuration == 0)

        try await peer.send(.setConfiguration(.init(configuration: 1)), id: 101)
        let ii1 = try await peer.take(.interfaceInfo)
        let ep1 = try await peer.take(.epInfo)
        let st1 = try await peer.take(.configurationStatus, id: 101)
        #expect(ii1.index < ep1.index && ep1.index < st1.index)
        guard case .interfaceInfo(let configured) = ii1.packet.message, case .epInfo(let eps) = ep1.packet.message,
              case .configurationStatus(let s1) = st1.packet.message else { Issue.record("wrong messages"); return }
        #expect(configured.interfaceCount == 1 && configured.interfaceClass[0] == 0xff)
        #expect(eps.type[epIndex(0x81)] == USBRedirEndpointType.bulk.rawValue)
        #expect(s1.status == Self.status.success && s1.configuration == 1)

        // A configuration the device does not have.
        try await peer.send(.setConfiguration(.init(configuration: 7)), id: 102)
        let bad = try await peer.take(.configurationStatus, id: 102)
        guard case .configurationStatus(let s7) = bad.packet.message else { return }
        #expect(s7.status != Self.status.success)

        let get = try await peer.request(.getConfiguration, id: 103)
        #expect(get.message == .configurationStatus(.init(status: Self.status.success, configuration: 1)))

        let alt = try await peer.request(.setAltSetting(.init(interface: 0, alt: 0)), id: 104)
        #expect(alt.message == .altSettingStatus(.init(status: Self.status.success, interface: 0, alt: 0)))
        let badAlt = try await peer.request(.setAltSetting(.init(interface: 0, alt: 3)), id: 105)
        guard case .altSettingStatus(let sBad) = badAlt.message else { return }
        #expect(sBad.status != Self.status.success && sBad.alt == 0)
        let getAlt = try await peer.request(.getAltSetting(.init(interface: 0)), id: 106)
        #expect(getAlt.message == .altSettingStatus(.init(status: Self.status.success, interface: 0, alt: 0)))
        try await rig.finish()
    }

    @Test func altSettingChangesTheEndpointsAnnounced() async throws {
        let (rig, hs) = try await Rig.connected(IsoDevice())
        let peer = rig.peer
        let ep = try #require(hs.epInfo)
        #expect(ep.type[epIndex(IsoDevice.isoIn)] == USBRedirEndpointType.invalid.rawValue)

        try await peer.send(.setAltSetting(.init(interface: 0, alt: 1)), id: 10)
        let newEP = try await peer.take(.epInfo)
        let status = try await peer.take(.altSettingStatus, id: 10)
        #expect(newEP.index < status.index)
        guard case .epInfo(let e) = newEP.packet.message else { return }
        #expect(e.type[epIndex(IsoDevice.isoIn)] == USBRedirEndpointType.iso.rawValue)
        #expect(e.type[epIndex(IsoDevice.isoOut)] == USBRedirEndpointType.iso.rawValue)
        #expect(e.maxPacketSize[epIndex(IsoDevice.isoIn)] == 192 && e.interval[epIndex(IsoDevice.isoIn)] == 1)
        #expect(status.packet.message == .altSettingStatus(.init(status: Self.status.success, interface: 0, alt: 1)))
        let get = try await peer.request(.getAltSetting(.init(interface: 0)), id: 11)
        #expect(get.message == .altSettingStatus(.init(status: Self.status.success, interface: 0, alt: 1)))
        try await rig.finish()
    }

    // MARK: Bulk

    @Test func bulkTransfersCarryThePatternLengthsAndIdsExactly() async throws {
        let device = SourceSinkDevice(serial: "SS-BULK")
        let (rig, _) = try await Rig.connected(device)
        let peer = rig.peer

        let bigID: UInt64 = 0xfedc_ba98_7654_3210
        let mib = try await peer.bulkIn(endpoint: 0x81, length: 1 << 20, id: bigID)
        #expect(mib.status == Self.status.success && mib.length == 1 << 20 && mib.endpoint == 0x81)
        #expect(mib.data?.readableBytes == 1 << 20)
        #expect(isSourceSinkPattern(mib.data))

        // > 65535: needs 32bits_bulk_length in both directions.
        let odd = try await peer.bulkIn(endpoint: 0x81, length: 70_001, id: UInt64.max)
        #expect(odd.length == 70_001 && odd.data?.readableBytes == 70_001)
        #expect(isSourceSinkPattern(odd.data))
        let small = try await peer.bulkIn(endpoint: 0x81, length: 100, id: 1 << 32)
        #expect(small.length == 100 && isSourceSinkPattern(small.data))

        let out = ByteBuffer(repeating: 0xa5, count: 100_000)
        let sunk = try await peer.bulkOut(endpoint: 0x02, data: out, id: 0x8000_0000_0000_0001)
        #expect(sunk.status == Self.status.success && sunk.length == 100_000)
        #expect(sunk.data == nil || sunk.data?.readableBytes == 0)
        #expect(await device.bytesSunk == 100_000)

        // The replies carried exactly the ids asked for, once each.
        let ids = await peer.packets(.bulkPacket).map(\.packet.id)
        #expect(ids == [bigID, UInt64.max, 1 << 32, 0x8000_0000_0000_0001])
        try await rig.finish()
    }

    // MARK: Concurrency and cancel

    @Test func aPendingBulkInDelaysNothingElseAndCancelEndsIt() async throws {
        let device = SlowDevice()
        let (rig, _) = try await Rig.connected(device)
        let peer = rig.peer

        try await peer.sendBulkIn(endpoint: 0x81, length: 512, id: 1)
        try await eventually("the slow transfer is in the device") { await device.pendingCount == 1 }

        // Control, a bulk IN and a bulk OUT on other endpoints complete meanwhile.
        let desc = try await peer.control(requestType: 0x80, request: 6, value: 0x0100, index: 0, length: 18, id: 2)
        #expect(desc.status == Self.status.success && desc.length == 18)
        let fast = try await peer.bulkIn(endpoint: SlowDevice.fastIn, length: 4096, id: 3)
        #expect(fast.status == Self.status.success && isSourceSinkPattern(fast.data))
        let out = try await peer.bulkOut(endpoint: SlowDevice.fastOut, data: ByteBuffer(repeating: 1, count: 1000), id: 4)
        #expect(out.length == 1000)
        // ... and so does another slow endpoint's transfer when released.
        try await peer.sendBulkIn(endpoint: 0x82, length: 100, id: 5)
        try await eventually("both slow transfers are in the device") { await device.pendingCount == 2 }
        #expect(await device.releaseOldest(endpoint: 0x82) == 0x82)
        #expect(try await peer.bulkReply(id: 5).status == Self.status.success)

        #expect(await peer.packets(.bulkPacket).allSatisfy { $0.packet.id != 1 }, "the slow one is still pending")
        #expect(await device.pendingCount == 1)

        // cancel_data_packet on the running transfer: a reply with status cancelled and the same id.
        try await peer.send(.cancelDataPacket, id: 1)
        let cancelled = try await peer.bulkReply(id: 1)
        #expect(cancelled.status == Self.status.cancelled && cancelled.length == 0 && cancelled.endpoint == 0x81)
        #expect(await device.cancelledCount == 1)
        #expect(await device.pendingCount == 0)

        // A cancelled transfer queued behind a running one never reaches the device.
        try await peer.sendBulkIn(endpoint: 0x83, length: 10, id: 6)
        try await eventually("transfer 6 is in the device") { await device.pendingCount == 1 }
        try await peer.sendBulkIn(endpoint: 0x83, length: 10, id: 7)
        try await peer.barrier(id: 8)   // 7 is queued now
        try await peer.send(.cancelDataPacket, id: 7)
        try await peer.barrier(id: 9)
        let started = await device.startedCount
        #expect(await device.releaseOldest(endpoint: 0x83) == 0x83)
        #expect(try await peer.bulkReply(id: 6).status == Self.status.success)
        #expect(try await peer.bulkReply(id: 7).status == Self.status.cancelled)
        #expect(await device.startedCount == started)
        try await rig.finish()
    }

    // MARK: Receiving streams

    @Test func interruptReceivingStreamsPacketsUntilStopped() async throws {
        let (rig, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-INT"))
        let peer = rig.peer
        let start = try await peer.request(.startInterruptReceiving(.init(endpoint: 0x83)), id: 500)
        #expect(start.message == .interruptReceivingStatus(.init(status: Self.status.success, endpoint: 0x83)))

        var values: [UInt8] = []
        for _ in 0..<8 {
            let p = try await peer.take(.interruptPacket)
            guard case .interruptPacket(let m) = p.packet.message else { return }
            #expect(m.endpoint == 0x83 && m.status == Self.status.success && m.length == 64)
            let d = byteArray(m.data)
            #expect(d.count == 64 && Set(d).count == 1)
            values.append(d.first ?? 0)
        }
        #expect(values == Array(values[0]..<(values[0] + 8)), "one packet per device read, in order")

        try await assertStreamStops(peer, stopMessage: .stopInterruptReceiving(.init(endpoint: 0x83)), id: 501,
                                    data: .interruptPacket,
                                    expected: .interruptReceivingStatus(.init(status: Self.status.success, endpoint: 0x83)))
        try await rig.finish()
    }

    @Test func bufferedBulkReceivingStreamsThePatternUntilStopped() async throws {
        let (rig, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-BBR"))
        let peer = rig.peer
        let start = try await peer.request(.startBulkReceiving(.init(streamID: 0, bytesPerTransfer: 4096, endpoint: 0x81,
                                                                     transferCount: 4)), id: 600)
        #expect(start.message == .bulkReceivingStatus(.init(streamID: 0, endpoint: 0x81, status: Self.status.success)))
        for _ in 0..<4 {
            let p = try await peer.take(.bufferedBulkPacket)
            guard case .bufferedBulkPacket(let m) = p.packet.message else { return }
            #expect(m.endpoint == 0x81 && m.status == Self.status.success && m.length == 4096 && m.streamID == 0)
            #expect(isSourceSinkPattern(m.data) && m.data?.readableBytes == 4096)
        }
        try await assertStreamStops(peer, stopMessage: .stopBulkReceiving(.init(streamID: 0, endpoint: 0x81)), id: 601,
                                    data: .bufferedBulkPacket,
                                    expected: .bulkReceivingStatus(.init(streamID: 0, endpoint: 0x81, status: Self.status.success)))
        try await rig.finish()
    }

    /// Many short streams, each stopped while packets flow: a packet is never
    /// behind its stop's status (it once was, when sends raced to the socket).
    @Test func aStoppedStreamNeverSendsAfterItsStatus() async throws {
        let (rig, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-ORDER"))
        let peer = rig.peer
        for round in 0..<100 {
            let id = UInt64(700 + 2 * round)
            _ = try await peer.request(.startBulkReceiving(.init(streamID: 0, bytesPerTransfer: 512, endpoint: 0x81,
                                                                 transferCount: 4)), id: id)
            _ = try await peer.take(.bufferedBulkPacket)
            try await peer.send(.stopBulkReceiving(.init(streamID: 0, endpoint: 0x81)), id: id + 1)
            let stop = try await peer.take(.bulkReceivingStatus, id: id + 1)
            let fence = try await peer.barrier(id: 10_000 + id)
            let behind = await peer.packets(.bufferedBulkPacket, after: stop.index)
                .filter { $0.index < fence.index }
            #expect(behind.isEmpty, "round \(round): \(behind.count) packet(s) after the stop's status")
        }
        try await rig.finish()
    }

    /// Stops a stream: the status comes back with the request's id, and no
    /// data packet of the stream follows it.
    func assertStreamStops(_ peer: GuestPeer, stopMessage: USBRedirMessage, id: UInt64,
                           data: USBRedirMessageType, expected: USBRedirMessage) async throws {
        try await peer.send(stopMessage, id: id)
        let stop = try await peer.take(expected.type, id: id)
        #expect(stop.packet.message == expected)
        let stopIndex = stop.index
        // The engine queues in the order it decides: a packet read before
        // the stop is ahead of the status, none comes after it.
        let afterStatus = await peer.packets(data, after: stopIndex)
        #expect(afterStatus.isEmpty, "\(afterStatus.count) \(data) packet(s) after the stop's status")
        // Absence cannot be awaited: give a stream that did not stop time to
        // show it (the models produce one packet per ms), then fence.
        let fence = try await peer.barrier(id: id + 1000)
        try await Task.sleep(nanoseconds: 30_000_000)
        try await peer.barrier(id: id + 1001)
        let late = await peer.packets(data, after: fence.index)
        #expect(late.isEmpty, "\(late.count) \(data) packet(s) after the stream was stopped")
    }

    // MARK: Isochronous

    @Test func isoStreamsCarryNumberedPacketsInAndRecordedPacketsOut() async throws {
        let device = IsoDevice()
        let (rig, _) = try await Rig.connected(device)
        let peer = rig.peer
        _ = try await peer.request(.setAltSetting(.init(interface: 0, alt: 1)), id: 10)
        _ = try await peer.take(.epInfo)
        rig.peer.hints.reset()

        let start = try await peer.request(.startIsoStream(.init(endpoint: IsoDevice.isoIn, packetsPerURB: 8, urbCount: 3)), id: 11)
        #expect(start.message == .isoStreamStatus(.init(status: Self.status.success, endpoint: IsoDevice.isoIn)))
        var numbers: [UInt32] = []
        for _ in 0..<12 {
            let p = try await peer.take(.isoPacket)
            guard case .isoPacket(let m) = p.packet.message else { return }
            #expect(m.endpoint == IsoDevice.isoIn && m.status == Self.status.success && m.length == 64)
            var d = m.data ?? ByteBuffer()
            let n: UInt32 = d.readInteger(endianness: .little) ?? 0
            #expect(byteArray(d) == [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: 60))
            numbers.append(n)
        }
        #expect(numbers == Array(1...12), "iso IN packets in the model's order, none lost")

        let startOut = try await peer.request(.startIsoStream(.init(endpoint: IsoDevice.isoOut, packetsPerURB: 8, urbCount: 3)), id: 12)
        #expect(startOut.message == .isoStreamStatus(.init(status: Self.status.success, endpoint: IsoDevice.isoOut)))
        let sent: [[UInt8]] = (0..<6).map { k in (0..<(10 + k * 30)).map { UInt8(truncatingIfNeeded: $0 * 7 + k) } }
        for s in sent {
            try await peer.send(.isoPacket(.init(endpoint: IsoDevice.isoOut, status: 0, length: UInt16(s.count),
                                                 data: ByteBuffer(bytes: s))))
        }
        try await peer.barrier(id: 13)
        // iso OUT packets go to the device in order without holding up
        // what the VM sends after them (no reply of their own).
        try await eventually("the device has every packet, in order") { await device.outPackets.count >= sent.count }
        #expect(await device.outPackets == sent)

        try await assertStreamStops(peer, stopMessage: .stopIsoStream(.init(endpoint: IsoDevice.isoIn)), id: 14,
                                    data: .isoPacket,
                                    expected: .isoStreamStatus(.init(status: Self.status.success, endpoint: IsoDevice.isoIn)))
        try await eventually("the device is no longer read") { await device.inCallsInProgress == 0 }
        let stopOut = try await peer.request(.stopIsoStream(.init(endpoint: IsoDevice.isoOut)), id: 15)
        #expect(stopOut.message == .isoStreamStatus(.init(status: Self.status.success, endpoint: IsoDevice.isoOut)))

        // Traffic of a device with isochronous endpoints is never marked compressible.
        let hints = rig.peer.hints.counts
        #expect(hints.compressible == 0 && hints.incompressible > 12)
        try await rig.finish()
    }

    // MARK: Bulk streams

    @Test func bulkStreamsAreAllocatedAndFreedOnTheDevice() async throws {
        let device = StreamsDevice()
        let (rig, hs) = try await Rig.connected(device)
        let peer = rig.peer
        #expect(hs.deviceConnect?.speed == USBRedirSpeed.super.rawValue)
        let ep = try #require(hs.epInfo)
        #expect(ep.maxStreams[epIndex(0x81)] == 16 && ep.maxStreams[epIndex(0x02)] == 16)
        #expect(ep.maxPacketSize[epIndex(0x81)] == 1024)

        let mask: UInt32 = 1 << UInt32(epIndex(0x81)) | 1 << UInt32(epIndex(0x02))
        let alloc = try await peer.request(.allocBulkStreams(.init(endpoints: mask, streamCount: 16)), id: 20)
        #expect(alloc.message == .bulkStreamsStatus(.init(endpoints: mask, streamCount: 16, status: Self.status.success)))
        let allocations = await device.allocations
        #expect(allocations.count == 1)
        #expect(allocations.first?.endpoints == [0x02, 0x81] && allocations.first?.count == 16)

        // A transfer on a stream reaches the device with its stream id.
        let onStream = try await peer.bulkIn(endpoint: 0x81, length: 32, id: 21, streamID: 5)
        #expect(onStream.streamID == 5 && byteArray(onStream.data) == [UInt8](repeating: 5, count: 32))

        let free = try await peer.request(.freeBulkStreams(.init(endpoints: mask)), id: 22)
        guard case .bulkStreamsStatus(let f) = free.message else { Issue.record("not bulk_streams_status"); return }
        #expect(f.status == Self.status.success && f.endpoints == mask)
        #expect(await device.frees == [[0x02, 0x81]])
        try await rig.finish()
    }

    @Test func aDeviceWithoutBulkStreamsRefusesThem() async throws {
        let (rig, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-NOSTREAMS"))
        let mask: UInt32 = 1 << UInt32(epIndex(0x81))
        let alloc = try await rig.peer.request(.allocBulkStreams(.init(endpoints: mask, streamCount: 4)), id: 30)
        guard case .bulkStreamsStatus(let s) = alloc.message else { Issue.record("not bulk_streams_status"); return }
        #expect(s.status != Self.status.success && s.endpoints == mask)
        let free = try await rig.peer.request(.freeBulkStreams(.init(endpoints: mask)), id: 31)
        guard case .bulkStreamsStatus(let f) = free.message else { return }
        #expect(f.status != Self.status.success)
        try await rig.finish()
    }

    // MARK: Filter

    @Test func aFilterThatRejectsTheDeviceBeforeConnectStopsTheSession() async throws {
        let (rig, _) = try await Rig.connected(nil, name: "filtered")
        let peer = rig.peer
        // Reject vendor-specific interfaces (source-sink's), allow the rest.
        try await peer.send(.filterFilter(.init(rules: "0xff,-1,-1,-1,0|-1,-1,-1,-1,1")))
        try await peer.barrier(id: 1)   // the session has the filter now

        try await rig.session.plug(SourceSinkDevice(serial: "SS-FILTER"))
        #expect(try await rig.end() == .rejectedByFilter)
        #expect(await rig.session.phase == .rejected)
        #expect(await rig.session.lastError?.contains("filter") == true)
        #expect(await rig.session.hasDevice, "the device stays plugged, waiting for a profile change")
        try await peer.waitForClose()
        for type in [USBRedirMessageType.interfaceInfo, .epInfo, .deviceConnect] {
            #expect(await peer.packets(type).isEmpty, "\(type) sent for a device the filter rejects")
        }
    }

    @Test func aFilterThatAllowsTheDeviceLetsItConnect() async throws {
        let (rig, _) = try await Rig.connected(nil, name: "allowed")
        try await rig.peer.send(.filterFilter(.init(rules: "0x08,-1,-1,-1,0|-1,-1,-1,-1,1")))
        try await rig.peer.barrier(id: 1)
        try await rig.session.plug(SourceSinkDevice(serial: "SS-ALLOW"))
        let dc = try await rig.peer.take(.deviceConnect)
        guard case .deviceConnect(let m) = dc.packet.message else { return }
        #expect(m.vendorID == 0x0525)
        #expect(await rig.session.phase == .connected)
        try await rig.finish()
    }

    @Test func filterRejectAfterConnectEndsTheSession() async throws {
        let (rig, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-REJECT"))
        try await rig.peer.send(.filterReject)
        #expect(try await rig.end() == .rejectedByFilter)
        #expect(await rig.session.phase == .rejected)
        try await rig.peer.waitForClose()
    }

    // MARK: Unplug

    @Test func unplugSendsDisconnectAndReplugWaitsForTheAck() async throws {
        var limits = SessionLimits()
        limits.disconnectAckTimeoutNanoseconds = 10_000_000_000
        let (rig, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-UNPLUG-1"), limits: limits)
        let peer = rig.peer, session = rig.session

        await session.unplug()
        let disconnect = try await peer.take(.deviceDisconnect)
        #expect(await session.phase == .waitingForDevice)
        #expect(await !session.hasDevice)

        let began = Date()
        let plugging = Task { try await session.plug(SourceSinkDevice(serial: "SS-UNPLUG-2")) }
        try await eventually("plug reached the announcement") { await session.phase == .connecting }
        let fence = try await peer.barrier(id: 1)
        #expect(await peer.packets(.deviceConnect, after: disconnect.index).isEmpty,
                "device_connect before device_disconnect_ack")
        guard case .configurationStatus(let s) = fence.packet.message else { return }
        #expect(s.configuration == 1, "the new device is plugged, only not announced")

        try await peer.send(.deviceDisconnectAck)
        let ii = try await peer.take(.interfaceInfo)
        let dc = try await peer.take(.deviceConnect)
        #expect(ii.index > fence.index && dc.index > ii.index)
        try await within(5, "plug") { try await plugging.value }
        #expect(Date().timeIntervalSince(began) < 5, "announced on the ack, not on the 10 s timeout")
        #expect(await session.phase == .connected)
        try await rig.finish()
    }

    @Test func withoutTheAckCapReplugAnnouncesAtOnce() async throws {
        var caps = USBRedirCapabilities.all
        caps.remove(.deviceDisconnectAck)
        var limits = SessionLimits()
        limits.disconnectAckTimeoutNanoseconds = 10_000_000_000
        let (rig, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-NOACK-1"), caps: caps, limits: limits)
        await rig.session.unplug()
        try await rig.peer.take(.deviceDisconnect)
        try await within(5, "plug without ack") { try await rig.session.plug(SourceSinkDevice(serial: "SS-NOACK-2")) }
        try await rig.peer.take(.deviceConnect)
        try await rig.finish()
    }

    // MARK: Malformed input

    enum Garbage: String, CaseIterable, Sendable {
        case beforeHello, unknownType, wrongDirection, oversizedLength

        /// Bytes after the peer's hello (or instead of it), and what the reason must say.
        var bytes: [UInt8] {
            func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
            let id64 = [UInt8](repeating: 0, count: 8)
            switch self {
            case .beforeHello: return le32(101) + le32(8) + le32(1) + [0x81, 0, 0, 2, 0, 0, 0, 0]
            case .unknownType: return [0xde, 0xad, 0xbe, 0xef, 0x99, 0x99, 0x99, 0x99] + id64 + Array(repeating: 0x55, count: 64)
            // device_connect is host-to-guest only.
            case .wrongDirection: return le32(1) + le32(10) + id64 + [2, 0, 0, 0, 0x25, 0x05, 0xa0, 0xa4, 0, 1]
            case .oversizedLength: return le32(101) + le32(0x7fff_fff0) + id64 + [0x02, 0, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0x7f]
            }
        }

        var reason: String {
            switch self {
            case .beforeHello: "before hello"
            case .unknownType: "unknown usbredir packet type"
            case .wrongDirection: "may not be sent by the usb-guest"
            case .oversizedLength: "exceeds the limit"
            }
        }
    }

    @Test(arguments: Garbage.allCases)
    func malformedBytesEndOnlyThatSession(_ garbage: Garbage) async throws {
        // Another session, on another peer, is busy the whole time.
        let (other, _) = try await Rig.connected(SourceSinkDevice(serial: "SS-OTHER"), name: "other")
        let progress = BusyProgress()
        let busy = Task {
            var id: UInt64 = 1
            while await !progress.stopped {
                let r = try await other.peer.bulkIn(endpoint: 0x81, length: 64 * 1024, id: id)
                guard r.status == 0, isSourceSinkPattern(r.data) else { throw PeerError(description: "bad reply \(id)") }
                await progress.bump()
                id += 1
            }
        }
        try await eventually("the other session is busy") { await progress.count >= 2 }

        let bad = try await Rig.start(SourceSinkDevice(serial: "SS-BAD"), name: "bad-\(garbage)")
        if garbage != .beforeHello { _ = try await bad.peer.connect() }
        try await bad.peer.sendRaw(garbage.bytes)
        let end = try await bad.end()
        guard case .protocolError(let reason) = end else {
            Issue.record("run ended with \(end), not protocolError")
            return
        }
        #expect(reason.contains(garbage.reason), "reason: \(reason)")
        try await bad.peer.waitForClose()
        #expect(await bad.session.lastError?.contains(garbage.reason) == true)

        // The other session kept going through and after the failure.
        let atFailure = await progress.count
        try await eventually("the other session moves on") { await progress.count >= atFailure + 5 }
        await progress.stop()
        try await within(10, "the other session's transfers") { try await busy.value }
        let after = try await other.peer.control(requestType: 0x80, request: 6, value: 0x0100, index: 0, length: 18, id: 99)
        #expect(after.status == Self.status.success && after.length == 18)
        #expect(await other.session.phase == .connected)
        try await other.finish()
    }

    // MARK: Limits

    @Test func transfersInFlightStayWithinTheBound() async throws {
        var limits = SessionLimits()
        limits.maxTransfersInFlight = 2
        let device = SlowDevice()
        let (rig, _) = try await Rig.connected(device, limits: limits)
        let peer = rig.peer
        let readBefore = peer.toSession.chunksRead

        // Eight slow requests on four endpoints, each in its own write.
        let endpoints = SlowDevice.slowEndpoints + SlowDevice.slowEndpoints
        for (i, ep) in endpoints.enumerated() { try await peer.sendBulkIn(endpoint: ep, length: 256, id: UInt64(i + 1)) }
        try await eventually("two transfers reach the device") { await device.pendingCount >= 2 }
        // Observed, not slept for: the session has read the third request and
        // holds it, waiting for a permit. From here a bounded session cannot
        // move until a transfer ends, so the counts below are exact; one
        // without the bound would take all eight (four endpoints in parallel),
        // which these counts or the maxConcurrent checks below then show.
        try await waitFor("the session read a third request", timeout: 5) { peer.toSession.chunksRead - readBefore >= 3 }
        #expect(await device.pendingCount == 2)
        #expect(await device.maxConcurrent == 2)
        // Two admitted and one read but waiting for a permit; the rest unread.
        #expect(peer.toSession.chunksRead - readBefore == 3)
        #expect(await peer.packets(.bulkPacket).isEmpty)

        for n in 1...8 {
            // By its endpoint: the device's Task per transfer may reach it in
            // either order, so "oldest" there need not be request n.
            #expect(await device.releaseOldest(endpoint: endpoints[n - 1]) != nil)
            _ = try await peer.bulkReply(id: UInt64(n))
            if n <= 6 {
                try await eventually("the next transfer is admitted") { await device.pendingCount >= 2 }
            }
            #expect(await device.maxConcurrent <= 2)
        }
        #expect(await device.maxConcurrent == 2)
        #expect(peer.toSession.chunksRead - readBefore == 8)
        try await rig.finish()
    }

    // MARK: Counters

    @Test func countersCountWhatMoved() async throws {
        let device = SourceSinkDevice(serial: "SS-COUNT")
        let (rig, _) = try await Rig.connected(device)
        let peer = rig.peer
        _ = try await peer.bulkIn(endpoint: 0x81, length: 1000, id: 1)
        _ = try await peer.bulkIn(endpoint: 0x81, length: 70_000, id: 2)
        _ = try await peer.control(requestType: 0x80, request: 6, value: 0x0100, index: 0, length: 18, id: 3)
        _ = try await peer.bulkOut(endpoint: 0x02, data: ByteBuffer(repeating: 7, count: 300), id: 4)
        _ = try await peer.bulkOut(endpoint: 0x02, data: ByteBuffer(repeating: 7, count: 5000), id: 5)
        // A failed transfer moves nothing.
        let stalled = try await peer.control(requestType: 0xc0, request: 0x42, value: 0, index: 0, length: 8, id: 6)
        #expect(stalled.status == Self.status.stall)

        let c = await rig.session.counters
        #expect(c.bytesIn == 1000 + 70_000 + 18)
        #expect(c.transfersIn == 3)
        #expect(c.bytesOut == 5300)
        #expect(c.transfersOut == 2)
        #expect(c.packetsReceived == 7)   // hello + six requests
        try await rig.finish()
    }
}
