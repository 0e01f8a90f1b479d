import NIOCore

/// A test and benchmark device in the manner of Linux's gadget zero
/// (design.md): bulk IN returns byte i = i % 63 counted from the start of
/// each transfer, bulk OUT swallows anything, interrupt IN sends 64-byte
/// packets of one repeated byte every interval.
public actor SourceSinkDevice: VirtualUSBDevice {
    public static let vendorID: UInt16 = 0x0525
    public static let productID: UInt16 = 0xa4a0
    public static let bulkIn: UInt8 = 0x81, bulkOut: UInt8 = 0x02, interruptIn: UInt8 = 0x83
    /// Largest single transfer served; bounds what one request can make us allocate.
    public static let maxTransferLength = 4 * 1024 * 1024

    public nonisolated let descriptor: USBDeviceDescriptor
    public nonisolated let speed: USBSpeed = .high
    public var core: VirtualDeviceCore
    private var interruptCounter: UInt8 = 0
    /// Bytes and transfers seen on bulk OUT, for tests and benchmarks.
    public private(set) var bytesSunk = 0
    /// The bulk IN pattern, built once and grown to the longest request seen:
    /// every IN transfer is a slice of it (shared storage, no bytes made).
    private var patternBuffer = ByteBuffer()

    public init(serial: String) {
        var d = USBDeviceDescriptor(vendorID: Self.vendorID, productID: Self.productID)
        d.manufacturer = "usbredir"
        d.product = "Source/Sink"
        d.serial = serial
        d.deviceClass = 0
        descriptor = d
        let interface = USBInterfaceDescriptor(
            number: 0, interfaceClass: 0xff, interfaceSubclass: 0, interfaceProtocol: 0,
            endpoints: [
                .init(address: Self.bulkIn, type: .bulk, maxPacketSize: 512),
                .init(address: Self.bulkOut, type: .bulk, maxPacketSize: 512),
                // High speed: 2^(4-1) microframes = 1 ms.
                .init(address: Self.interruptIn, type: .interrupt, maxPacketSize: 64, interval: 4),
            ])
        core = VirtualDeviceCore(descriptor: d, configuration: .init(value: 1, interfaces: [interface]))
    }

    public func close() async {}

    /// Control and bulk are answered from memory; interrupt IN waits for its interval.
    public nonisolated func mayAnswerAtOnce(endpoint: UInt8) -> Bool {
        endpoint == 0 || endpoint == Self.bulkIn || endpoint == Self.bulkOut
    }

    public func transferAtOnce(endpoint: UInt8, length: Int, data: ByteBuffer?) async -> USBTransferResult? {
        endpoint == Self.interruptIn ? nil : await transfer(endpoint: endpoint, length: length, data: data, streamID: 0)
    }
    public func reset() async -> USBTransferStatus { core.reset(); return .success }

    public func control(_ setup: USBSetupPacket, data: ByteBuffer?) async -> USBTransferResult {
        core.standardControl(setup) ?? .failed(.stall)
    }

    public func transfer(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32) async -> USBTransferResult {
        guard core.endpoint(endpoint) != nil, !core.halted.contains(endpoint) else {
            return .failed(core.halted.contains(endpoint) ? .stall : .invalid)
        }
        switch endpoint {
        case Self.bulkIn:
            guard length <= Self.maxTransferLength else { return .failed(.invalid) }
            return .inData(patternSlice(length: length))
        case Self.bulkOut:
            let n = data?.readableBytes ?? 0
            bytesSunk += n
            return .outDone(n)
        case Self.interruptIn:
            // One packet per interval, like the hardware would pace it.
            do { try await Task.sleep(nanoseconds: 1_000_000) } catch { return .failed(.cancelled) }
            interruptCounter &+= 1
            return .inData(ByteBuffer(repeating: interruptCounter, count: min(64, length)))
        default:
            return .failed(.invalid)
        }
    }

    private func patternSlice(length: Int) -> ByteBuffer {
        if patternBuffer.readableBytes < length {
            // Grow in large steps so a ramp of sizes does not rebuild it often;
            // bounded by maxTransferLength (checked by the caller).
            patternBuffer = Self.pattern(length: min(Self.maxTransferLength, max(length, 2 * patternBuffer.readableBytes, 64 * 1024)))
        }
        return patternBuffer.getSlice(at: patternBuffer.readerIndex, length: length)!
    }

    /// byte i = i % 63 (the C reference host and the bench's load generator
    /// check the same), built with doubling copies rather than per byte.
    public static func pattern(length: Int) -> ByteBuffer {
        var b = ByteBuffer()
        b.reserveCapacity(length)
        b.writeBytes((0..<min(length, 63 * 64)).map { UInt8($0 % 63) })
        while b.readableBytes < length {
            let chunk = min(b.readableBytes / 63 * 63, length - b.readableBytes)
            b.writeImmutableBuffer(b.getSlice(at: 0, length: chunk)!)
        }
        return b
    }
}
