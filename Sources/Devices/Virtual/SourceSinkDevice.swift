import NIOConcurrencyHelpers
import NIOCore

/// A test and benchmark device in the manner of Linux's gadget zero
/// (design.md): bulk IN returns byte i = i % 63 counted from the start of
/// each transfer, bulk OUT swallows anything, interrupt IN sends 64-byte
/// packets of one repeated byte every interval. Control and bulk are
/// answered from memory, in the caller's turn; interrupt IN waits for its
/// interval.
public final class SourceSinkDevice: VirtualUSBDevice {
    public static let vendorID: UInt16 = 0x0525
    public static let productID: UInt16 = 0xa4a0
    public static let bulkIn: UInt8 = 0x81, bulkOut: UInt8 = 0x02, interruptIn: UInt8 = 0x83
    /// Largest single transfer served; bounds what one request can make us allocate.
    public static let maxTransferLength = 4 * 1024 * 1024

    public let descriptor: USBDeviceDescriptor
    public let speed: USBSpeed = .high

    private struct State {
        var core: VirtualDeviceCore
        var interruptCounter: UInt8 = 0
        var bytesSunk = 0
        /// The bulk IN pattern, built once and grown to the longest request
        /// seen: every IN transfer is a slice of it (shared storage, no bytes made).
        var patternBuffer = ByteBuffer()
    }

    private let state: NIOLockedValueBox<State>

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
        state = NIOLockedValueBox(State(core: VirtualDeviceCore(descriptor: d, configuration: .init(value: 1, interfaces: [interface]))))
    }

    public func withCore<T>(_ body: (inout VirtualDeviceCore) -> T) -> T {
        state.withLockedValue { body(&$0.core) }
    }

    /// Bytes seen on bulk OUT, for tests and benchmarks.
    public var bytesSunk: Int { state.withLockedValue { $0.bytesSunk } }

    public func close() async {}
    public func reset() async -> USBTransferStatus {
        withCore { $0.reset() }
        return .success
    }

    public func submit(_ request: USBTransferRequest,
                       completion: @escaping USBTransferCompletion) -> (any USBCancellableTransfer)? {
        switch request {
        case .control(let setup, _):
            completion(withCore { $0.standardControl(setup) } ?? .failed(.stall))
        case .data(let endpoint, let length, let data, _):
            if endpoint == Self.interruptIn, case .success = check(endpoint).status {
                return nextInterruptPacket(length: length, completion)
            }
            completion(bulk(endpoint: endpoint, length: length, data: data))
        case .isochronous:
            completion(.failed(.invalid))
        }
        return nil
    }

    /// `.success` when the endpoint may transfer now, else why not.
    private func check(_ endpoint: UInt8) -> USBTransferResult {
        withCore { core in
            guard core.endpoint(endpoint) != nil else { return .failed(.invalid) }
            return core.halted.contains(endpoint) ? .failed(.stall) : .noData(.success)
        }
    }

    private func bulk(endpoint: UInt8, length: Int, data: ByteBuffer?) -> USBTransferResult {
        let allowed = check(endpoint)
        guard allowed.status == .success else { return allowed }
        switch endpoint {
        case Self.bulkIn:
            guard length <= Self.maxTransferLength else { return .failed(.invalid) }
            return .inData(state.withLockedValue { Self.patternSlice(&$0.patternBuffer, length: length) })
        case Self.bulkOut:
            let n = data?.readableBytes ?? 0
            state.withLockedValue { $0.bytesSunk += n }
            return .outDone(n)
        default:
            return .failed(.invalid)
        }
    }

    /// One packet per interval, like the hardware would pace it.
    private func nextInterruptPacket(length: Int, _ completion: @escaping USBTransferCompletion) -> any USBCancellableTransfer {
        TaskTransfer(Task { [state] in
            do { try await Task.sleep(nanoseconds: 1_000_000) } catch { return completion(.failed(.cancelled)) }
            let counter = state.withLockedValue { s in
                s.interruptCounter &+= 1
                return s.interruptCounter
            }
            completion(.inData(ByteBuffer(repeating: counter, count: min(64, length))))
        })
    }

    private static func patternSlice(_ pattern: inout ByteBuffer, length: Int) -> ByteBuffer {
        if pattern.readableBytes < length {
            // Grow in large steps so a ramp of sizes does not rebuild it often;
            // bounded by maxTransferLength (checked by the caller).
            pattern = Self.pattern(length: min(Self.maxTransferLength, max(length, 2 * pattern.readableBytes, 64 * 1024)))
        }
        return pattern.getSlice(at: pattern.readerIndex, length: length)!
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
