import Common
import CLibUSB
import Logging

/// Physical USB devices as libusb and sysfs show them, without opening any:
/// identity from the cached device descriptor, strings from sysfs
/// attributes, arrivals and departures from libusb's hotplug callbacks.
public final class LibUSBMonitor: USBDeviceMonitor, @unchecked Sendable {
    /// Where the kernel publishes each device, by port path ("1-3.2").
    public static let sysfsDevices = "/sys/bus/usb/devices"
    /// Events kept for a subscriber that does not keep up; a reconciler
    /// lists again on any event, so dropping the oldest loses nothing.
    public static let eventBufferLimit = 1024

    private let context: LibUSBContext
    private let hub: LibUSBHotplugHub
    private let timeouts: LibUSBDevice.Timeouts
    private let logger: Logger
    private var callback: libusb_hotplug_callback_handle = 0

    public init(context: LibUSBContext? = nil, timeouts: LibUSBDevice.Timeouts = .init(),
                logger: Logger = Logger(label: "usbredir.libusb")) throws(DeviceError) {
        if let context { self.context = context } else { self.context = try LibUSBContext.shared() }
        self.timeouts = timeouts
        self.logger = logger
        hub = LibUSBHotplugHub(sysfs: Self.sysfsDevices)
        guard libusb_has_capability(UInt32(LIBUSB_CAP_HAS_HOTPLUG.rawValue)) != 0 else {
            logger.notice("libusb has no hotplug support here: devices are seen only when listed")
            return
        }
        let events = Int32(LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED.rawValue | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT.rawValue)
        // Retained for the process's life: libusb may be inside the callback
        // while we deregister, so the hub must outlive its registration.
        let user = Unmanaged.passRetained(hub).toOpaque()
        let rc = libusb_hotplug_register_callback(
            self.context.context, events, 0, LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY,
            LIBUSB_HOTPLUG_MATCH_ANY, { _, device, event, user in
                guard let device, let user else { return 0 }
                Unmanaged<LibUSBHotplugHub>.fromOpaque(user).takeUnretainedValue().handle(device, event)
                return 0    // stay registered
            }, user, &callback)
        if rc != 0 { logger.warning("hotplug registration failed: \(LibUSBStatus.name(rc))") }
    }

    deinit {
        if callback != 0 { libusb_hotplug_deregister_callback(context.context, callback) }
        hub.finishAll()
    }

    public func presentDevices() async throws -> [USBDeviceInfo] {
        let infos = withDeviceList { list in list.compactMap { hub.info(of: $0) } }
        hub.remember(infos)
        return infos.sorted { ($0.bus, $0.port) < ($1.bus, $1.port) }
    }

    public func events() -> AsyncStream<USBDeviceEvent> {
        hub.subscribe()
    }

    /// Opens by identity: the device now at `info`'s bus and port path, if
    /// it still has `info`'s vendor and product.
    public func open(_ info: USBDeviceInfo) async throws -> any USBDevice {
        let device: LibUSBDevice? = withDeviceList { list in
            for d in list {
                guard let now = hub.info(of: d), now.bus == info.bus, now.port == info.port else { continue }
                guard now.vendorID == info.vendorID, now.productID == info.productID else { return nil }
                return LibUSBDevice(device: d, info: now, context: context, timeouts: timeouts, logger: logger)
            }
            return nil
        }
        guard let device else {
            throw DeviceError.notFound("no \(Hex.id(info.vendorID)):\(Hex.id(info.productID)) at \(info.port)")
        }
        try await device.open()
        return device
    }

    private func withDeviceList<T>(_ body: ([OpaquePointer]) -> T) -> T {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let n = libusb_get_device_list(context.context, &list)
        guard n > 0, let list else {
            if let list { libusb_free_device_list(list, 1) }
            return body([])
        }
        defer { libusb_free_device_list(list, 1) }
        return body((0..<n).compactMap { list[$0] })
    }
}


/// Hotplug subscribers, and what is known of each present device so that
/// a departure can be reported with the strings sysfs no longer has.
final class LibUSBHotplugHub: @unchecked Sendable {
    private struct Key: Hashable { var bus: Int, address: Int }
    private struct State {
        var subscribers: [Int: AsyncStream<USBDeviceEvent>.Continuation] = [:]
        var nextID = 0
        var known: [Key: USBDeviceInfo] = [:]
    }
    private let state = LibUSBLocked(State())
    private let sysfs: String

    init(sysfs: String) { self.sysfs = sysfs }

    func subscribe() -> AsyncStream<USBDeviceEvent> {
        let (stream, continuation) = AsyncStream<USBDeviceEvent>.makeStream(
            bufferingPolicy: .bufferingNewest(LibUSBMonitor.eventBufferLimit))
        let id = state.withLock { s in
            defer { s.nextID += 1 }
            s.subscribers[s.nextID] = continuation
            return s.nextID
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { _ = $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    func finishAll() {
        for c in state.withLock({ s in defer { s.subscribers = [:] }; return Array(s.subscribers.values) }) {
            c.finish()
        }
    }

    func remember(_ infos: [USBDeviceInfo]) {
        state.withLock { s in
            s.known = Dictionary(infos.map { (Key(bus: $0.bus, address: $0.address), $0) }, uniquingKeysWith: { a, _ in a })
        }
    }

    /// On libusb's event thread.
    func handle(_ device: OpaquePointer, _ event: libusb_hotplug_event) {
        let key = Key(bus: Int(libusb_get_bus_number(device)), address: Int(libusb_get_device_address(device)))
        let message: USBDeviceEvent?
        if event == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED {
            message = info(of: device).map { info in
                state.withLock { $0.known[key] = info }
                return .arrived(info)
            }
        } else {
            let remembered = state.withLock { $0.known.removeValue(forKey: key) }
            message = (remembered ?? info(of: device, readStrings: false)).map { .left($0) }
        }
        guard let message else { return }
        for c in state.withLock({ Array($0.subscribers.values) }) { c.yield(message) }
    }

    /// What the OS shows of `device`, or nil for a root hub.
    func info(of device: OpaquePointer, readStrings: Bool = true) -> USBDeviceInfo? {
        var ports = [UInt8](repeating: 0, count: 8)     // USB 3: at most 7 tiers below the root
        let depth = libusb_get_port_numbers(device, &ports, Int32(ports.count))
        guard depth > 0 else { return nil }
        let bus = Int(libusb_get_bus_number(device))
        let port = "\(bus)-" + ports[..<Int(depth)].map(String.init).joined(separator: ".")
        var d = libusb_device_descriptor()
        guard libusb_get_device_descriptor(device, &d) == 0 else { return nil }
        let dir = "\(sysfs)/\(port)"
        return USBDeviceInfo(
            vendorID: d.idVendor, productID: d.idProduct, deviceClass: d.bDeviceClass,
            serial: readStrings ? readAttributeFile("\(dir)/serial") : nil,
            manufacturer: readStrings ? readAttributeFile("\(dir)/manufacturer") : nil,
            productName: readStrings ? readAttributeFile("\(dir)/product") : nil,
            bus: bus, port: port, address: Int(libusb_get_device_address(device)),
            speed: Self.speed(libusb_get_device_speed(device)))
    }

    static func speed(_ s: Int32) -> USBSpeed? {
        switch UInt32(bitPattern: s) {
        case LIBUSB_SPEED_LOW.rawValue: .low
        case LIBUSB_SPEED_FULL.rawValue: .full
        case LIBUSB_SPEED_HIGH.rawValue: .high
        case LIBUSB_SPEED_SUPER.rawValue, LIBUSB_SPEED_SUPER_PLUS.rawValue: .super
        default: nil
        }
    }
}
