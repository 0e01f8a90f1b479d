import NIOConcurrencyHelpers
import NIOCore

public enum USBSpeed: String, Sendable, CaseIterable {
    case low, full, high, `super`
}

/// How a transfer ended, in USB terms (the session maps it to usbredir).
public enum USBTransferStatus: Sendable, Equatable {
    case success
    case stall
    case timeout
    case babble
    case ioError
    case cancelled
    /// The request makes no sense for this device (bad endpoint, length...).
    case invalid
    /// The device went away during the transfer.
    case noDevice
}

/// The outcome of one transfer: IN transfers carry data, OUT transfers the
/// number of bytes the device consumed.
public struct USBTransferResult: Sendable, Equatable {
    public var status: USBTransferStatus
    public var data: ByteBuffer?
    public var consumed: Int

    public init(status: USBTransferStatus, data: ByteBuffer? = nil, consumed: Int = 0) {
        self.status = status
        self.data = data
        self.consumed = consumed
    }

    public static func inData(_ data: ByteBuffer) -> USBTransferResult { .init(status: .success, data: data) }
    public static func outDone(_ count: Int) -> USBTransferResult { .init(status: .success, consumed: count) }
    public static func failed(_ status: USBTransferStatus) -> USBTransferResult { .init(status: status) }
    /// A request with no data stage that ends with `status`, success or not.
    public static func noData(_ status: USBTransferStatus) -> USBTransferResult { .init(status: status) }
}

/// A USB setup packet (USB 2.0, 9.3).
public struct USBSetupPacket: Sendable, Equatable {
    public var requestType: UInt8
    public var request: UInt8
    public var value: UInt16
    public var index: UInt16
    public var length: UInt16

    public init(requestType: UInt8, request: UInt8, value: UInt16, index: UInt16, length: UInt16) {
        self.requestType = requestType
        self.request = request
        self.value = value
        self.index = index
        self.length = length
    }

    public var isIn: Bool { requestType & 0x80 != 0 }
    public var type: UInt8 { (requestType >> 5) & 0x3 }        // 0 standard, 1 class, 2 vendor
    public var recipient: UInt8 { requestType & 0x1f }          // 0 device, 1 interface, 2 endpoint
}

/// One transfer the VM asks of a device.
public enum USBTransferRequest: Sendable {
    case control(USBSetupPacket, data: ByteBuffer?)
    /// Bulk or interrupt: IN endpoints return up to `length` bytes, OUT
    /// endpoints take `data`. `streamID` 0 unless the endpoint has streams.
    case data(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32)
    /// One isochronous packet.
    case isochronous(endpoint: UInt8, length: Int, data: ByteBuffer?)

    public var endpoint: UInt8 {
        switch self {
        case .control: 0
        case .data(let endpoint, _, _, _), .isochronous(let endpoint, _, _): endpoint
        }
    }
}

/// Runs exactly once per submitted transfer.
public typealias USBTransferCompletion = @Sendable (USBTransferResult) -> Void

/// A device the session can redirect: physical (libusb) or virtual.
///
/// Transfers go through one call, `submit`, and come back through its
/// completion. The rule of what is answered when: a device that has the
/// answer without waiting for anything (from memory: no I/O, no timer, no
/// other party) calls the completion inside `submit`, so the session
/// replies in the same turn of its event loop; anything else completes
/// later, on a thread of the device's choosing, and must never block the
/// caller meanwhile.
public protocol USBDevice: AnyObject, Sendable {
    var descriptor: USBDeviceDescriptor { get }
    var speed: USBSpeed { get }
    /// The active configuration (interfaces with their current alt settings).
    var activeConfiguration: USBConfigurationDescriptor? { get async }
    /// Opens the device for redirection (claims interfaces, detaches drivers).
    func open() async throws
    /// Releases what `open` took.
    func close() async

    func setConfiguration(_ value: UInt8) async -> USBTransferStatus
    func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus
    func altSetting(interface: UInt8) async -> UInt8?
    func reset() async -> USBTransferStatus
    func clearHalt(endpoint: UInt8) async -> USBTransferStatus

    /// Whether the device keeps each endpoint's transfers in order itself,
    /// so the session hands it several of one endpoint at once, as the VM
    /// sent them (libusb: the kernel queues URBs per endpoint and the host
    /// controller chains them with no gap on the bus, as usbredirhost
    /// does). Otherwise the session gives it one transfer per endpoint at a
    /// time; transfers of different endpoints may always overlap.
    var queuesTransfers: Bool { get }

    /// Starts `request`; `completion` runs exactly once (see the rule above;
    /// also inside this call when the request cannot start). Returns what
    /// cancels it while in flight: cancelling ends it with `.cancelled` as
    /// soon as the device allows (it may still complete otherwise if it was
    /// finishing).
    func submit(_ request: USBTransferRequest,
                completion: @escaping USBTransferCompletion) -> (any USBCancellableTransfer)?
}

extension USBDevice {
    public var queuesTransfers: Bool { false }

    /// `submit`, awaited: for callers that wait for one transfer (tools,
    /// tests, isochronous OUT). Cancelling the task cancels the transfer.
    public func perform(_ request: USBTransferRequest) async -> USBTransferResult {
        let inFlight = TransferInFlight()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<USBTransferResult, Never>) in
                inFlight.started(submit(request) { c.resume(returning: $0) })
            }
        } onCancel: {
            inFlight.cancel()
        }
    }

    public func control(_ setup: USBSetupPacket, data: ByteBuffer?) async -> USBTransferResult {
        await perform(.control(setup, data: data))
    }

    public func transfer(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32 = 0) async -> USBTransferResult {
        await perform(.data(endpoint: endpoint, length: length, data: data, streamID: streamID))
    }

    public func isoTransfer(endpoint: UInt8, length: Int, data: ByteBuffer?) async -> USBTransferResult {
        await perform(.isochronous(endpoint: endpoint, length: length, data: data))
    }
}

/// A device whose transfers are async functions (a model that waits on
/// timers or other tasks): each submitted transfer runs as a task of its
/// own, and cancelling it cancels the task.
public protocol USBAsyncTransferDevice: USBDevice {
    func run(_ request: USBTransferRequest) async -> USBTransferResult
}

extension USBAsyncTransferDevice {
    public func submit(_ request: USBTransferRequest,
                       completion: @escaping USBTransferCompletion) -> (any USBCancellableTransfer)? {
        TaskTransfer(Task { completion(await run(request)) })
    }
}

/// A transfer that is a task.
struct TaskTransfer: USBCancellableTransfer {
    let task: Task<Void, Never>
    init(_ task: Task<Void, Never>) { self.task = task }
    func cancel() { task.cancel() }
}

/// The transfer `perform` waits for: a cancel that comes before `submit`
/// returned its handle is applied when it does.
private final class TransferInFlight: Sendable {
    private let state = NIOLockedValueBox<(transfer: (any USBCancellableTransfer)?, cancelled: Bool)>((nil, false))

    func started(_ transfer: (any USBCancellableTransfer)?) {
        let cancelNow = state.withLockedValue { s -> Bool in
            s.transfer = transfer
            return s.cancelled
        }
        if cancelNow { transfer?.cancel() }
    }

    func cancel() {
        let transfer = state.withLockedValue { s -> (any USBCancellableTransfer)? in
            s.cancelled = true
            return s.transfer
        }
        transfer?.cancel()
    }
}

/// What the session needs to know about a device's identity.
public struct USBDeviceDescriptor: Sendable, Equatable {
    public var usbVersion: UInt16 = 0x0200
    public var deviceClass: UInt8 = 0
    public var deviceSubclass: UInt8 = 0
    public var deviceProtocol: UInt8 = 0
    public var maxPacketSize0: UInt8 = 64
    public var vendorID: UInt16
    public var productID: UInt16
    public var deviceVersion: UInt16 = 0x0100
    public var manufacturer: String?
    public var product: String?
    public var serial: String?
    public var configurationCount: UInt8 = 1

    public init(vendorID: UInt16, productID: UInt16) {
        self.vendorID = vendorID
        self.productID = productID
    }
}

public enum USBEndpointType: UInt8, Sendable {
    case control = 0, isochronous = 1, bulk = 2, interrupt = 3
}

public struct USBEndpointDescriptor: Sendable, Equatable {
    public var address: UInt8
    public var type: USBEndpointType
    public var maxPacketSize: UInt16
    public var interval: UInt8
    /// Bulk streams the endpoint supports (USB 3; 0: none). A power of two.
    public var maxStreams: UInt32 = 0
    /// Class-specific descriptors that follow the endpoint's (a UAS pipe usage).
    public var classSpecific: [UInt8] = []

    public init(address: UInt8, type: USBEndpointType, maxPacketSize: UInt16, interval: UInt8 = 0) {
        self.address = address
        self.type = type
        self.maxPacketSize = maxPacketSize
        self.interval = interval
    }

    public var isIn: Bool { address & 0x80 != 0 }
}

public struct USBInterfaceDescriptor: Sendable, Equatable {
    public var number: UInt8
    public var alternateSetting: UInt8 = 0
    public var interfaceClass: UInt8
    public var interfaceSubclass: UInt8
    public var interfaceProtocol: UInt8
    public var endpoints: [USBEndpointDescriptor]

    public init(number: UInt8, alternateSetting: UInt8 = 0, interfaceClass: UInt8, interfaceSubclass: UInt8,
                interfaceProtocol: UInt8, endpoints: [USBEndpointDescriptor]) {
        self.number = number
        self.alternateSetting = alternateSetting
        self.interfaceClass = interfaceClass
        self.interfaceSubclass = interfaceSubclass
        self.interfaceProtocol = interfaceProtocol
        self.endpoints = endpoints
    }
}

public struct USBConfigurationDescriptor: Sendable, Equatable {
    public var value: UInt8
    public var attributes: UInt8 = 0x80
    public var maxPowerMilliamps: UInt16 = 100
    /// Every interface and alternate setting.
    public var interfaces: [USBInterfaceDescriptor]

    public init(value: UInt8, interfaces: [USBInterfaceDescriptor]) {
        self.value = value
        self.interfaces = interfaces
    }

    /// The interfaces as selected by `alt` (interface number -> alt setting).
    public func active(alt: [UInt8: UInt8]) -> [USBInterfaceDescriptor] {
        let numbers = Set(interfaces.map(\.number)).sorted()
        return numbers.compactMap { n in
            interfaces.first { $0.number == n && $0.alternateSetting == (alt[n] ?? 0) }
                ?? interfaces.first { $0.number == n }
        }
    }
}

/// Bulk streams (USB 3): most devices have none.
public protocol USBBulkStreamsCapable {
    func allocateStreams(endpoints: [UInt8], count: UInt32) async -> USBTransferStatus
    func freeStreams(endpoints: [UInt8]) async -> USBTransferStatus
}

extension USBDevice {
    public func allocateStreams(endpoints: [UInt8], count: UInt32) async -> USBTransferStatus {
        if let capable = self as? any USBBulkStreamsCapable {
            return await capable.allocateStreams(endpoints: endpoints, count: count)
        }
        return .invalid
    }

    public func freeStreams(endpoints: [UInt8]) async -> USBTransferStatus {
        if let capable = self as? any USBBulkStreamsCapable {
            return await capable.freeStreams(endpoints: endpoints)
        }
        return .invalid
    }
}

/// A transfer in flight: cancelling ends it with `.cancelled` as soon as the
/// device allows (it may still complete otherwise if it was finishing).
public protocol USBCancellableTransfer: Sendable {
    func cancel()
}
