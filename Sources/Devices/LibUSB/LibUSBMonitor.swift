import Common
import CLibUSB
import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where a running process hears of devices plugged and unplugged.
///
/// Debian's libusb is built with its udev backend. That backend lists the
/// bus once, when a context is made (libudev reads sysfs, which works
/// without udevd), and from then on keeps its device list only from the
/// events udevd re-broadcasts after running its rules (netlink group 2).
/// Without udevd nothing is re-broadcast (libudev even disables its
/// monitor when /run/udev/control is missing), so a long-running process
/// would never see a device plugged after it started, nor one unplugged.
public enum HotplugSource: Sendable, Equatable {
    /// libusb's own hotplug callbacks and device list: udevd runs.
    case udevd
    /// No udevd: the kernel's uevents (group 1) say when to look, each look
    /// lists the bus afresh through a short-lived libusb context, and a
    /// device is opened through its usbfs node (libusb_wrap_sys_device),
    /// since the process's context never learns of new devices.
    case kernel

    /// The udev control socket, there while udevd runs (libudev's own test).
    public static let udevControl = "/run/udev/control"

    /// udevd when its control socket exists, or when umockdev (the test
    /// suite's emulated bus) stands in for it and delivers udev's events.
    public static func choose(udevControlExists: Bool, environment: [String: String]) -> HotplugSource {
        udevControlExists || environment["UMOCKDEV_DIR"] != nil ? .udevd : .kernel
    }

    /// The choice for this host, now.
    public static func detect() -> HotplugSource {
        var environment: [String: String] = [:]
        if let dir = getenv("UMOCKDEV_DIR") { environment["UMOCKDEV_DIR"] = String(cString: dir) }
        return choose(udevControlExists: access(udevControl, F_OK) == 0, environment: environment)
    }
}

/// Physical USB devices as libusb and sysfs show them, without opening any:
/// identity from the cached device descriptor, strings from sysfs
/// attributes, arrivals and departures from libusb's hotplug callbacks
/// (udevd running) or from the kernel's uevents (`HotplugSource.kernel`).
public final class LibUSBMonitor: USBDeviceMonitor, @unchecked Sendable {
    /// Where the kernel publishes each device, by port path ("1-3.2").
    public static let sysfsDevices = "/sys/bus/usb/devices"
    /// Events kept for a subscriber that does not keep up; a reconciler
    /// lists again on any event, so dropping the oldest loses nothing.
    public static let eventBufferLimit = 1024

    public let source: HotplugSource
    private let context: LibUSBContext
    private let hub: LibUSBHotplugHub
    private let timeouts: LibUSBDevice.Timeouts
    private let logger: Logger
    private var callback: libusb_hotplug_callback_handle = 0
    /// `HotplugSource.udevd`: libusb's list disagreed with sysfs at the last look.
    private let listStale = LibUSBLocked(false)
    /// `HotplugSource.kernel`: started by the first `events()`, so that
    /// one-shot commands (list, plan) neither listen nor log it.
    private let kernelListening = LibUSBLocked<(started: Bool, listener: KernelUEventListener?)>((false, nil))

    /// `source` nil: `HotplugSource.detect()`.
    public init(context: LibUSBContext? = nil, timeouts: LibUSBDevice.Timeouts = .init(),
                logger: Logger = Logger(label: "usbredir.libusb"), source: HotplugSource? = nil) throws(DeviceError) {
        if let context { self.context = context } else { self.context = try LibUSBContext.shared() }
        self.timeouts = timeouts
        self.logger = logger
        self.source = source ?? HotplugSource.detect()
        hub = LibUSBHotplugHub(sysfs: Self.sysfsDevices)
        if self.source == .udevd { registerHotplugCallback() }
    }

    private func registerHotplugCallback() {
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

    /// No udevd: what is on the bus now is what later events are told
    /// against; each add or remove of a USB device (or events lost) looks
    /// at the bus again and reports the difference. Without the socket,
    /// devices are still seen: every `presentDevices` lists afresh, and
    /// the reconciler lists every few seconds.
    private func listenToKernel() {
        let (hub, logger) = (hub, logger)
        kernelListening.withLock { state in
            guard !state.started else { return }
            state.started = true
            logger.info("udevd is not running (no \(HotplugSource.udevControl)): hotplug from the kernel's uevents")
            hub.startTracking(Self.listAfresh(hub, logger))
            state.listener = KernelUEventListener(logger: logger) { events, lost in
                guard lost || events.contains(where: { $0.action == "add" || $0.action == "remove" }) else { return }
                hub.track(Self.listAfresh(hub, logger))
            }
        }
    }

    deinit {
        if callback != 0 { libusb_hotplug_deregister_callback(context.context, callback) }
        kernelListening.withLock { $0.listener }?.stop()
        hub.finishAll()
    }

    public func presentDevices() async throws -> [USBDeviceInfo] {
        let infos: [USBDeviceInfo]
        switch source {
        case .udevd:
            let listed = withDeviceList(context.context) { list in list.compactMap { hub.info(of: $0) } }
            infos = noteAgreement(Self.listAgrees(listed, sysfs: Self.sysfsDevices)) ? listed : Self.listAfresh(hub, logger)
            hub.remember(infos)
        case .kernel:
            infos = Self.listAfresh(hub, logger)
        }
        return infos.sorted { ($0.bus, $0.port) < ($1.bus, $1.port) }
    }

    /// Logs when libusb's list starts or stops disagreeing with sysfs; returns `agrees`.
    private func noteAgreement(_ agrees: Bool) -> Bool {
        let changed = listStale.withLock { stale in
            defer { stale = !agrees }
            return stale == agrees
        }
        if changed && !agrees {
            logger.notice("libusb's device list differs from sysfs (is udevd delivering events?): listing the bus afresh")
        } else if changed {
            logger.info("libusb's device list agrees with sysfs again")
        }
        return agrees
    }

    public func events() -> AsyncStream<USBDeviceEvent> {
        let stream = hub.subscribe()
        if source == .kernel { listenToKernel() }
        return stream
    }

    /// Opens by identity: the device now at `info`'s bus and port path, if
    /// it still has `info`'s vendor and product.
    public func open(_ info: USBDeviceInfo) async throws -> any USBDevice {
        let device: LibUSBDevice
        switch source {
        case .udevd:
            let found: LibUSBDevice? = withDeviceList(context.context) { list in
                for d in list {
                    guard let now = hub.info(of: d), now.bus == info.bus, now.port == info.port else { continue }
                    guard now.vendorID == info.vendorID, now.productID == info.productID else { return nil }
                    return LibUSBDevice(device: d, info: now, context: context, timeouts: timeouts, logger: logger)
                }
                return nil
            }
            // Not in the context's list: it went stale (see LibUSBMonitor+Sysfs).
            device = try found ?? openThroughNode(info)
        case .kernel:
            device = try openThroughNode(info)
        }
        try await device.open()
        return device
    }

    /// Without udevd the process's context lists only what was there when
    /// it was made, so the device is found in a fresh list and opened
    /// through its usbfs node, which libusb then drives in the process's
    /// context like any device it opened itself (libusb_wrap_sys_device).
    /// Devices opened earlier stay on that context, untouched.
    private func openThroughNode(_ info: USBDeviceInfo) throws(DeviceError) -> LibUSBDevice {
        guard let now = Self.listAfresh(hub, logger).first(where: { $0.bus == info.bus && $0.port == info.port }),
              now.vendorID == info.vendorID, now.productID == info.productID else { throw Self.notFound(info) }
        let fd = openNode(now.nodePath)
        guard fd >= 0 else { throw LibUSBStatus.nodeOpenError(errno, now) }
        var handle: OpaquePointer?
        let rc = libusb_wrap_sys_device(context.context, Int(fd), &handle)
        guard rc == 0, let handle, let device = libusb_get_device(handle) else {
            if rc == 0, let handle { libusb_close(handle) }
            closeDescriptor(fd)
            throw LibUSBStatus.openError(rc == 0 ? LIBUSB_ERROR_OTHER.rawValue : rc, now)
        }
        // The node's number may have passed to another device since the list was read.
        var d = libusb_device_descriptor()
        guard libusb_get_device_descriptor(device, &d) == 0, d.idVendor == now.vendorID, d.idProduct == now.productID else {
            libusb_close(handle)
            closeDescriptor(fd)
            throw Self.notFound(info)
        }
        return LibUSBDevice(device: device, info: now, context: context, timeouts: timeouts, logger: logger,
                            wrapped: .init(handle: handle, fd: fd))
    }

    private static func notFound(_ info: USBDeviceInfo) -> DeviceError {
        .notFound("no \(Hex.id(info.vendorID)):\(Hex.id(info.productID)) at \(info.port)")
    }

    /// The bus as it is now, through a libusb context made for this look
    /// and exited after it: making a context is what makes the udev
    /// backend read sysfs, and it does so without udevd. Nothing is opened.
    static func listAfresh(_ hub: LibUSBHotplugHub, _ logger: Logger) -> [USBDeviceInfo] {
        var fresh: OpaquePointer?
        let rc = libusb_init(&fresh)
        guard rc == 0, let fresh else {
            logger.warning("cannot list USB devices: libusb_init failed: \(LibUSBStatus.name(rc))")
            return []
        }
        defer { libusb_exit(fresh) }
        return withDeviceList(fresh) { list in list.compactMap { hub.info(of: $0) } }
    }
}

/// A usbfs node opened for I/O (at file scope: inside the monitor `open` is its own).
private func openNode(_ path: String) -> Int32 {
    open(path, O_RDWR | O_CLOEXEC)
}

private func withDeviceList<T>(_ context: OpaquePointer, _ body: ([OpaquePointer]) -> T) -> T {
    var list: UnsafeMutablePointer<OpaquePointer?>?
    let n = libusb_get_device_list(context, &list)
    guard n > 0, let list else {
        if let list { libusb_free_device_list(list, 1) }
        return body([])
    }
    defer { libusb_free_device_list(list, 1) }
    return body((0..<n).compactMap { list[$0] })
}


/// Hotplug subscribers, and what is known of each present device so that
/// a departure can be reported with the strings sysfs no longer has.
final class LibUSBHotplugHub: @unchecked Sendable {
    private struct Key: Hashable { var bus: Int, address: Int }
    private struct State {
        var subscribers: [Int: AsyncStream<USBDeviceEvent>.Continuation] = [:]
        var nextID = 0
        var known: [Key: USBDeviceInfo] = [:]
        /// `HotplugSource.kernel`: the devices of the last look, which the
        /// next one is told against.
        var tracked: [Key: USBDeviceInfo] = [:]
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
            s.known = Self.byKey(infos)
        }
    }

    /// `HotplugSource.kernel`: the bus as first seen.
    func startTracking(_ infos: [USBDeviceInfo]) {
        state.withLock { $0.tracked = Self.byKey(infos) }
    }

    /// `HotplugSource.kernel`, on the uevent thread: reports what left and
    /// what arrived since the last look. A device that came back at the
    /// same port has a new address: it left, and it arrived.
    func track(_ infos: [USBDeviceInfo]) {
        let now = Self.byKey(infos)
        let messages = state.withLock { s -> [USBDeviceEvent] in
            let before = s.tracked
            s.tracked = now
            let left = before.filter { now[$0.key] == nil }.values.sorted { $0.port < $1.port }
            let arrived = now.filter { before[$0.key] == nil }.values.sorted { $0.port < $1.port }
            return left.map { .left($0) } + arrived.map { .arrived($0) }
        }
        guard !messages.isEmpty else { return }
        let subscribers = state.withLock { Array($0.subscribers.values) }
        for message in messages { for c in subscribers { c.yield(message) } }
    }

    private static func byKey(_ infos: [USBDeviceInfo]) -> [Key: USBDeviceInfo] {
        Dictionary(infos.map { (Key(bus: $0.bus, address: $0.address), $0) }, uniquingKeysWith: { a, _ in a })
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
