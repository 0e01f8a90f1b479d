/// A USB device as the OS shows it, read without opening the device
/// (descriptors and sysfs attributes). Matching and `list` use only this.
public struct USBDeviceInfo: Sendable, Hashable {
    public var vendorID: UInt16
    public var productID: UInt16
    public var deviceClass: UInt8
    public var serial: String?
    public var manufacturer: String?
    public var productName: String?
    public var bus: Int
    /// Port path as the kernel names it: "1-3.2" (bus 1, port 3, hub port 2).
    public var port: String
    public var address: Int
    public var speed: USBSpeed?

    public init(vendorID: UInt16, productID: UInt16, deviceClass: UInt8, serial: String?, manufacturer: String?,
                productName: String?, bus: Int, port: String, address: Int, speed: USBSpeed?) {
        self.vendorID = vendorID
        self.productID = productID
        self.deviceClass = deviceClass
        self.serial = serial
        self.manufacturer = manufacturer
        self.productName = productName
        self.bus = bus
        self.port = port
        self.address = address
        self.speed = speed
    }
}

extension USBDeviceInfo {
    /// The usbfs node libusb opens: /dev/bus/usb/BBB/DDD.
    public var nodePath: String {
        "/dev/bus/usb/\(Self.threeDigits(bus))/\(Self.threeDigits(address))"
    }

    private static func threeDigits(_ n: Int) -> String {
        let digits = String(n)
        return String(repeating: "0", count: max(0, 3 - digits.count)) + digits
    }
}

public enum USBDeviceEvent: Sendable, Equatable {
    case arrived(USBDeviceInfo)
    case left(USBDeviceInfo)
}

/// Lists present devices, reports arrivals and departures, and opens a
/// device for redirection. The libusb backend implements it for real
/// hardware; tests drive it with emulated devices.
public protocol USBDeviceMonitor: Sendable {
    /// Devices present now (root hubs excluded).
    func presentDevices() async throws -> [USBDeviceInfo]
    /// Arrivals and departures from now on.
    func events() -> AsyncStream<USBDeviceEvent>
    /// Opens the device for redirection. Throws `DeviceError.busy` when
    /// another process holds it, `.notFound` when it left, `.access` on
    /// permissions.
    func open(_ info: USBDeviceInfo) async throws -> any USBDevice
}

/// A monitor that sees no devices: for virtual-only use and tests.
public struct EmptyUSBMonitor: USBDeviceMonitor {
    public init() {}
    public func presentDevices() async throws -> [USBDeviceInfo] { [] }
    public func events() -> AsyncStream<USBDeviceEvent> { AsyncStream { $0.finish() } }
    public func open(_ info: USBDeviceInfo) async throws -> any USBDevice {
        throw DeviceError.notFound("no device at \(info.port)")
    }
}
