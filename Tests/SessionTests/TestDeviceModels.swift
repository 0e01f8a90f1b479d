import Devices
import Foundation
import NIOCore

// Device models written for the protocol tests: the paths QEMU only uses with
// real devices that have them (isochronous streams, bulk streams) and a slow
// endpoint to test concurrency, cancellation and the in-flight bound.

/// A test model whose transfers are its actor's async methods: each
/// submitted transfer runs one of them on a task of its own.
protocol ActorTestDevice: USBAsyncTransferDevice, Actor {
    func answerControl(_ setup: USBSetupPacket, data: ByteBuffer?) async -> USBTransferResult
    func answerTransfer(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32) async -> USBTransferResult
    func answerIso(endpoint: UInt8, length: Int, data: ByteBuffer?) async -> USBTransferResult
}

extension ActorTestDevice {
    func run(_ request: USBTransferRequest) async -> USBTransferResult {
        switch request {
        case .control(let setup, let data): await answerControl(setup, data: data)
        case .data(let endpoint, let length, let data, let streamID):
            await answerTransfer(endpoint: endpoint, length: length, data: data, streamID: streamID)
        case .isochronous(let endpoint, let length, let data): await answerIso(endpoint: endpoint, length: length, data: data)
        }
    }
}

/// Configuration and alt-setting state shared by the test models.
struct TestDeviceState: Sendable {
    let descriptor: USBDeviceDescriptor
    let configuration: USBConfigurationDescriptor
    var configured = true
    var alt: [UInt8: UInt8] = [:]

    var active: USBConfigurationDescriptor? {
        guard configured else { return nil }
        var c = configuration
        c.interfaces = configuration.active(alt: alt)
        return c
    }

    func endpoint(_ address: UInt8) -> USBEndpointDescriptor? {
        active?.interfaces.lazy.flatMap(\.endpoints).first { $0.address == address }
    }

    mutating func setConfiguration(_ value: UInt8) -> USBTransferStatus {
        guard value == 0 || value == configuration.value else { return .stall }
        configured = value != 0
        alt = [:]
        return .success
    }

    mutating func setAltSetting(interface: UInt8, alt a: UInt8) -> USBTransferStatus {
        guard configuration.interfaces.contains(where: { $0.number == interface && $0.alternateSetting == a })
        else { return .stall }
        alt[interface] = a
        return .success
    }

    /// Just GET_DESCRIPTOR(device); everything else stalls.
    func control(_ s: USBSetupPacket) -> USBTransferResult {
        guard s.requestType == 0x80, s.request == 6, s.value == 0x0100 else { return .failed(.stall) }
        let d = descriptor
        let bytes: [UInt8] = [18, 1, 0x00, 0x02, d.deviceClass, d.deviceSubclass, d.deviceProtocol, d.maxPacketSize0,
                              UInt8(d.vendorID & 0xff), UInt8(d.vendorID >> 8),
                              UInt8(d.productID & 0xff), UInt8(d.productID >> 8), 0x00, 0x01, 0, 0, 0, 1]
        return .inData(ByteBuffer(bytes: bytes.prefix(Int(s.length))))
    }
}

/// An isochronous device shaped like an audio interface: interface 0 has no
/// endpoints in alt 0 and an iso IN (0x81) and iso OUT (0x02) endpoint in
/// alt 1. Iso IN produces one packet per 1 ms frame, numbered from 1 (a
/// 32-bit little-endian counter, then 60 bytes of its low byte); iso OUT
/// records what it gets.
actor IsoDevice: ActorTestDevice {
    static let isoIn: UInt8 = 0x81, isoOut: UInt8 = 0x02
    nonisolated let descriptor: USBDeviceDescriptor
    nonisolated let speed: USBSpeed = .high
    private var state: TestDeviceState
    private(set) var produced: UInt32 = 0
    /// iso IN calls in progress (the session's stream loop inside the device).
    private(set) var inCallsInProgress = 0
    private(set) var outPackets: [[UInt8]] = []

    init() {
        var d = USBDeviceDescriptor(vendorID: 0x1d6b, productID: 0x1501)
        d.product = "iso model"
        descriptor = d
        let alt0 = USBInterfaceDescriptor(number: 0, alternateSetting: 0, interfaceClass: 0xff, interfaceSubclass: 0,
                                          interfaceProtocol: 0, endpoints: [])
        let alt1 = USBInterfaceDescriptor(number: 0, alternateSetting: 1, interfaceClass: 0xff, interfaceSubclass: 0,
                                          interfaceProtocol: 0, endpoints: [
                                              .init(address: Self.isoIn, type: .isochronous, maxPacketSize: 192, interval: 1),
                                              .init(address: Self.isoOut, type: .isochronous, maxPacketSize: 192, interval: 1),
                                          ])
        state = TestDeviceState(descriptor: d, configuration: .init(value: 1, interfaces: [alt0, alt1]))
    }

    var activeConfiguration: USBConfigurationDescriptor? { state.active }
    func open() async throws {}
    func close() async {}
    func setConfiguration(_ value: UInt8) async -> USBTransferStatus { state.setConfiguration(value) }
    func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus {
        state.setAltSetting(interface: interface, alt: alt)
    }
    func altSetting(interface: UInt8) async -> UInt8? { state.alt[interface] ?? 0 }
    func reset() async -> USBTransferStatus { state.alt = [:]; return .success }
    func clearHalt(endpoint: UInt8) async -> USBTransferStatus { .success }
    func answerControl(_ setup: USBSetupPacket, data: ByteBuffer?) async -> USBTransferResult { state.control(setup) }
    func answerTransfer(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32) async -> USBTransferResult {
        .failed(.invalid)
    }

    func answerIso(endpoint: UInt8, length: Int, data: ByteBuffer?) async -> USBTransferResult {
        guard let ep = state.endpoint(endpoint), ep.type == .isochronous else { return .failed(.invalid) }
        if endpoint == Self.isoIn {
            inCallsInProgress += 1
            defer { inCallsInProgress -= 1 }
            do { try await Task.sleep(nanoseconds: 1_000_000) } catch { return .failed(.cancelled) }
            produced += 1
            var b = ByteBuffer()
            b.writeInteger(produced, endianness: .little)
            b.writeRepeatingByte(UInt8(truncatingIfNeeded: produced), count: min(60, max(0, length - 4)))
            return .inData(b)
        }
        var d = data ?? ByteBuffer()
        outPackets.append(d.readBytes(length: d.readableBytes) ?? [])
        return .outDone(outPackets.last!.count)
    }
}

/// A USB 3 device with bulk streams on 0x81 and 0x02 (16 each); it records
/// alloc/free calls.
actor StreamsDevice: ActorTestDevice, USBBulkStreamsCapable {
    nonisolated let descriptor: USBDeviceDescriptor
    nonisolated let speed: USBSpeed = .super
    private var state: TestDeviceState
    private(set) var allocations: [(endpoints: [UInt8], count: UInt32)] = []
    private(set) var frees: [[UInt8]] = []

    init() {
        var d = USBDeviceDescriptor(vendorID: 0x1d6b, productID: 0x3001)
        d.usbVersion = 0x0300
        d.maxPacketSize0 = 9
        descriptor = d
        var bulkIn = USBEndpointDescriptor(address: 0x81, type: .bulk, maxPacketSize: 1024)
        bulkIn.maxStreams = 16
        var bulkOut = USBEndpointDescriptor(address: 0x02, type: .bulk, maxPacketSize: 1024)
        bulkOut.maxStreams = 16
        let i = USBInterfaceDescriptor(number: 0, interfaceClass: 0x08, interfaceSubclass: 0x06, interfaceProtocol: 0x62,
                                       endpoints: [bulkIn, bulkOut])
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
    func answerTransfer(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32) async -> USBTransferResult {
        endpoint & 0x80 != 0 ? .inData(ByteBuffer(repeating: UInt8(truncatingIfNeeded: streamID), count: length))
            : .outDone(data?.readableBytes ?? 0)
    }
    func answerIso(endpoint: UInt8, length: Int, data: ByteBuffer?) async -> USBTransferResult { .failed(.invalid) }

    func allocateStreams(endpoints: [UInt8], count: UInt32) async -> USBTransferStatus {
        allocations.append((endpoints.sorted(), count))
        return .success
    }

    func freeStreams(endpoints: [UInt8]) async -> USBTransferStatus {
        frees.append(endpoints.sorted())
        return .success
    }
}

/// A device with slow bulk IN endpoints 0x81-0x84: a transfer on them waits
/// until the test releases it or its task is cancelled (then it ends with
/// `.cancelled`, as USBDevice asks). 0x85 (bulk IN) and 0x06 (bulk OUT) answer
/// at once. It counts the transfers pending in it at once.
actor SlowDevice: ActorTestDevice {
    static let slowEndpoints: [UInt8] = [0x81, 0x82, 0x83, 0x84]
    static let fastIn: UInt8 = 0x85, fastOut: UInt8 = 0x06

    private struct Pending {
        var endpoint: UInt8
        var length: Int
        var continuation: CheckedContinuation<USBTransferResult, Never>
    }

    nonisolated let descriptor: USBDeviceDescriptor
    nonisolated let speed: USBSpeed = .high
    private var state: TestDeviceState
    private var pending: [Int: Pending] = [:]
    private var nextToken = 0
    private(set) var maxConcurrent = 0
    private(set) var cancelledCount = 0
    private(set) var startedCount = 0

    init() {
        var d = USBDeviceDescriptor(vendorID: 0x1d6b, productID: 0x5100)
        d.product = "slow model"
        descriptor = d
        let eps = Self.slowEndpoints.map { USBEndpointDescriptor(address: $0, type: .bulk, maxPacketSize: 512) }
            + [.init(address: Self.fastIn, type: .bulk, maxPacketSize: 512),
               .init(address: Self.fastOut, type: .bulk, maxPacketSize: 512)]
        let i = USBInterfaceDescriptor(number: 0, interfaceClass: 0xff, interfaceSubclass: 0, interfaceProtocol: 0,
                                       endpoints: eps)
        state = TestDeviceState(descriptor: d, configuration: .init(value: 1, interfaces: [i]))
    }

    var pendingCount: Int { pending.count }
    var pendingEndpoints: [UInt8] { pending.keys.sorted().map { pending[$0]!.endpoint } }

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
        guard state.endpoint(endpoint) != nil else { return .failed(.invalid) }
        if endpoint == Self.fastIn { return .inData(SourceSinkDevice.pattern(length: length)) }
        if endpoint == Self.fastOut { return .outDone(data?.readableBytes ?? 0) }
        startedCount += 1
        let token = nextToken
        nextToken += 1
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<USBTransferResult, Never>) in
                if Task.isCancelled {
                    cancelledCount += 1
                    c.resume(returning: .failed(.cancelled))
                    return
                }
                pending[token] = Pending(endpoint: endpoint, length: length, continuation: c)
                maxConcurrent = max(maxConcurrent, pending.count)
            }
        } onCancel: {
            Task { await self.cancelPending(token) }
        }
    }

    private func cancelPending(_ token: Int) {
        guard let p = pending.removeValue(forKey: token) else { return }
        cancelledCount += 1
        p.continuation.resume(returning: .failed(.cancelled))
    }

    /// Completes the oldest pending transfer (on `endpoint`, if given) with
    /// pattern data; returns its endpoint, nil when none was pending.
    @discardableResult
    func releaseOldest(endpoint: UInt8? = nil) -> UInt8? {
        guard let token = pending.keys.sorted().first(where: { endpoint == nil || pending[$0]!.endpoint == endpoint }),
              let p = pending.removeValue(forKey: token) else { return nil }
        p.continuation.resume(returning: .inData(SourceSinkDevice.pattern(length: p.length)))
        return p.endpoint
    }

    func releaseAll() {
        while releaseOldest() != nil {}
    }
}
