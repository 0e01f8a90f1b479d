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

/// A device the session can redirect: physical (libusb) or virtual.
/// Transfers on one endpoint are issued in order by the caller; transfers on
/// different endpoints may run at the same time. A transfer whose task is
/// cancelled ends with `.cancelled` as soon as the device allows.
public protocol USBDevice: AnyObject, Sendable {
    var descriptor: USBDeviceDescriptor { get }
    var speed: USBSpeed { get }
    /// The active configuration (interfaces with their current alt settings).
    var activeConfiguration: USBConfigurationDescriptor? { get async }
    /// The configuration descriptor bytes the device reports (for logging).
    /// Opens the device for redirection (claims interfaces, detaches drivers).
    func open() async throws
    /// Releases what `open` took.
    func close() async

    func setConfiguration(_ value: UInt8) async -> USBTransferStatus
    func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus
    func altSetting(interface: UInt8) async -> UInt8?
    func reset() async -> USBTransferStatus
    func clearHalt(endpoint: UInt8) async -> USBTransferStatus

    func control(_ setup: USBSetupPacket, data: ByteBuffer?) async -> USBTransferResult
    /// Bulk or interrupt transfer: IN endpoints return up to `length` bytes,
    /// OUT endpoints take `data`.
    func transfer(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32) async -> USBTransferResult
    /// One isochronous packet (devices without iso endpoints answer `.invalid`).
    func isoTransfer(endpoint: UInt8, length: Int, data: ByteBuffer?) async -> USBTransferResult
    /// Whether a transfer on `endpoint` may be answered at once (see
    /// `transferAtOnce`); false unless a device says so, never for a
    /// physical device. Asked first, so the others pay nothing.
    func mayAnswerAtOnce(endpoint: UInt8) -> Bool
    /// The result of a bulk or interrupt transfer when the device has it
    /// without waiting for anything (from memory: no I/O, no timer, no other
    /// party), else nil with nothing changed; the session then runs
    /// `transfer` on the endpoint's worker. Answering in the session's own
    /// turn saves two thread hops per transfer.
    func transferAtOnce(endpoint: UInt8, length: Int, data: ByteBuffer?) async -> USBTransferResult?
    /// The same for control transfers.
    func controlAtOnce(_ setup: USBSetupPacket, data: ByteBuffer?) async -> USBTransferResult?
}

extension USBDevice {
    public func mayAnswerAtOnce(endpoint: UInt8) -> Bool { false }
    public func transferAtOnce(endpoint: UInt8, length: Int, data: ByteBuffer?) async -> USBTransferResult? { nil }
    public func controlAtOnce(_ setup: USBSetupPacket, data: ByteBuffer?) async -> USBTransferResult? { nil }
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

/// A device that keeps each endpoint's transfers in order itself, so the
/// session hands it several transfers of one endpoint at once, as the VM
/// sent them, instead of one after the other (libusb: the kernel queues
/// URBs per endpoint and the host controller chains them with no gap on
/// the bus, as usbredirhost does).
public protocol USBQueueingDevice: USBDevice {
    /// Starts a bulk or interrupt transfer and returns without waiting.
    /// `completion` runs exactly once, on any thread (inside this call when
    /// the transfer cannot start); transfers of one endpoint complete in the
    /// order they were started. Returns what cancels it while in flight.
    func startTransfer(endpoint: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32,
                       completion: @escaping @Sendable (USBTransferResult) -> Void) -> (any USBCancellableTransfer)?
    /// The same for one isochronous packet.
    func startIsoTransfer(endpoint: UInt8, length: Int, data: ByteBuffer?,
                          completion: @escaping @Sendable (USBTransferResult) -> Void) -> (any USBCancellableTransfer)?
}

/// A transfer in flight: cancelling ends it with `.cancelled` as soon as the
/// device allows (it may still complete otherwise if it was finishing).
public protocol USBCancellableTransfer: Sendable {
    func cancel()
}
