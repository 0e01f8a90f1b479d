#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging

/// One kernel uevent as the kernel sends it on its netlink socket:
/// "add@/devices/.../1-1.5", then KEY=VALUE fields, each ended by a NUL.
///
/// Only the kernel's own format is read. udevd re-broadcasts events in
/// libudev's format (a "libudev" header, group 2), and umockdev sends
/// that one too: both are refused here, so nothing but the kernel speaks.
public struct KernelUEvent: Sendable, Equatable {
    /// Most fields one event may carry; a usb_device add has about 15.
    public static let fieldLimit = 64

    public var action: String
    public var devpath: String
    public var fields: [String: String]

    /// A whole USB device (not one of its interfaces, not a usbmon or
    /// endpoint node): what libusb lists.
    public var isUSBDevice: Bool { fields["SUBSYSTEM"] == "usb" && fields["DEVTYPE"] == "usb_device" }

    /// Kernel name of the device, its port path for USB: "1-1.5".
    public var name: String { String(devpath.split(separator: "/").last ?? "") }

    public init(action: String, devpath: String, fields: [String: String]) {
        self.action = action
        self.devpath = devpath
        self.fields = fields
    }

    /// The event in `bytes` (one datagram), or nil when it is not a
    /// well-formed kernel uevent.
    public static func parse(_ bytes: some Collection<UInt8>) -> KernelUEvent? {
        let parts = bytes.split(separator: 0, omittingEmptySubsequences: true)
        guard let header = parts.first, let at = header.firstIndex(of: UInt8(ascii: "@")),
              at != header.startIndex, parts.count <= fieldLimit + 1 else { return nil }
        var fields: [String: String] = [:]
        for part in parts.dropFirst() {
            guard let eq = part.firstIndex(of: UInt8(ascii: "=")), eq != part.startIndex else { return nil }
            fields[String(decoding: part[..<eq], as: UTF8.self)] = String(decoding: part[part.index(after: eq)...], as: UTF8.self)
        }
        let action = String(decoding: header[..<at], as: UTF8.self)
        let devpath = String(decoding: header[header.index(after: at)...], as: UTF8.self)
        // The header repeats ACTION and DEVPATH; a message where they differ is not the kernel's.
        guard fields["ACTION"] == action, fields["DEVPATH"] == devpath, devpath.hasPrefix("/") else { return nil }
        return KernelUEvent(action: action, devpath: devpath, fields: fields)
    }
}

/// The kernel's uevents, read on a thread of its own from a
/// NETLINK_KOBJECT_UEVENT socket bound to group 1 (the kernel's events,
/// not udevd's re-broadcast in group 2).
///
/// For a host without udevd (a container, a minimal image): there libusb's
/// udev backend hears of no hotplug at all (LibUSBMonitor, `HotplugSource`).
/// `handle` runs on the listener's thread once per wake-up with the USB
/// device events read then, or with `lost: true` when the kernel dropped
/// some (the socket's buffer overflowed): the caller should look again.
final class KernelUEventListener: @unchecked Sendable {
    /// Bytes read of one datagram. The kernel builds an event in 2 KiB
    /// (UEVENT_BUFFER_SIZE); a longer one is not the kernel's and is dropped.
    static let datagramLimit = 8192
    /// Datagrams read per wake-up before `handle` runs: a hub of devices
    /// plugged at once is one look, not one per device.
    static let batchLimit = 64
    /// How long a wait lasts before the stop flag is checked again.
    static let pollMilliseconds: Int32 = 250
    private static let netlinkKObjectUEvent: Int32 = 15      // NETLINK_KOBJECT_UEVENT, linux/netlink.h
    private static let kernelGroup: UInt32 = 1

    /// struct sockaddr_nl (linux/netlink.h), not in Swift's Glibc module.
    private struct NetlinkAddress {
        var family = UInt16(AF_NETLINK)
        var pad: UInt16 = 0
        var pid: UInt32 = 0
        var groups: UInt32 = 0
    }

    private let fd: Int32
    private let handle: @Sendable (_ events: [KernelUEvent], _ lost: Bool) -> Void
    private let logger: Logger
    private let state = LibUSBLocked(State())
    private struct State {
        var running = true
        var thread: pthread_t?
    }

    /// Nil when the socket cannot be had (no netlink, say in a sandbox):
    /// the caller is left with its periodic look.
    init?(logger: Logger, handle: @escaping @Sendable (_ events: [KernelUEvent], _ lost: Bool) -> Void) {
        precondition(MemoryLayout<NetlinkAddress>.size == 12, "sockaddr_nl is 12 bytes")
        self.logger = logger
        self.handle = handle
        let sockType = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = socket(AF_NETLINK, sockType, Self.netlinkKObjectUEvent)
        guard fd >= 0 else {
            logger.warning("no kernel uevent socket (errno \(errno)): hotplug is seen at the next periodic look only")
            return nil
        }
        // A bigger buffer than the default: a burst (a hub and its devices)
        // should not overflow while the thread looks at the bus. Bounded:
        // the kernel caps it at net.core.rmem_max.
        var size: Int32 = 1 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var address = NetlinkAddress(groups: Self.kernelGroup)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<NetlinkAddress>.size)) }
        }
        guard bound == 0 else {
            logger.warning("cannot bind the kernel uevent socket (errno \(errno)): hotplug is seen at the next periodic look only")
            close(fd)
            return nil
        }
        self.fd = fd
        var thread = pthread_t()
        let me = Unmanaged.passRetained(self).toOpaque()
        guard pthread_create(&thread, nil, { raw in
            Unmanaged<KernelUEventListener>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, me) == 0 else {
            Unmanaged<KernelUEventListener>.fromOpaque(me).release()
            close(fd)
            return nil
        }
        state.withLock { $0.thread = thread }
    }

    /// Stops the thread and closes the socket.
    func stop() {
        let thread = state.withLock { s -> pthread_t? in
            s.running = false
            defer { s.thread = nil }
            return s.thread
        }
        guard let thread else { return }
        pthread_join(thread, nil)
        close(fd)
    }

    private func run() {
        var buffer = [UInt8](repeating: 0, count: Self.datagramLimit)
        while state.withLock({ $0.running }) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, Self.pollMilliseconds) > 0 else { continue }
            var events: [KernelUEvent] = []
            var lost = false
            for _ in 0..<Self.batchLimit {
                var from = NetlinkAddress()
                var fromLength = socklen_t(MemoryLayout<NetlinkAddress>.size)
                let n = buffer.withUnsafeMutableBytes { bytes in
                    withUnsafeMutablePointer(to: &from) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            recvfrom(fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT) | Int32(MSG_TRUNC), $0, &fromLength)
                        }
                    }
                }
                if n < 0 {
                    if errno == ENOBUFS { lost = true; continue }   // the kernel dropped events: look again
                    break                                          // EAGAIN: read all there was
                }
                // Only the kernel (port id 0) sends in group 1; a datagram
                // longer than the buffer (MSG_TRUNC gives its real length) is not its.
                guard from.pid == 0, n <= buffer.count, let event = KernelUEvent.parse(buffer[..<n]),
                      event.isUSBDevice else { continue }
                events.append(event)
            }
            if !events.isEmpty || lost {
                logger.debug("kernel uevents", metadata: ["events": "\(events.map { "\($0.action) \($0.name)" })", "lost": "\(lost)"])
                handle(events, lost)
            }
        }
    }
}
