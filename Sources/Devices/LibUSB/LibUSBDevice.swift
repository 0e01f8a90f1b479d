import CLibUSB
import Logging
import NIOCore

/// A physical USB device, driven through libusb for redirection.
///
/// `open` takes the device from the OS: it detaches the kernel drivers of
/// the active configuration's interfaces and claims them; `close` releases
/// them and re-attaches the drivers it detached. Transfers are libusb
/// asynchronous transfers completed on the context's event thread;
/// operations that block in the kernel run on the kept threads of
/// `BlockingThreads` (`libusbBlocking`), never on a Swift concurrency or
/// NIO thread.
public final class LibUSBDevice: USBDevice, USBBulkStreamsCapable, @unchecked Sendable {
    /// Largest bulk/interrupt transfer accepted (usbredir's bulk length is
    /// 32 bits; this bounds what one request from a VM can make us allocate).
    public static let maxTransferLength = 16 * 1024 * 1024
    /// How long to wait on close for cancelled transfers to be given back.
    static let closeDrainNanoseconds: UInt64 = 2_000_000_000

    /// Per transfer type, in milliseconds; 0 waits for ever. The defaults
    /// are usbredirhost's: bulk and interrupt wait as long as the VM does
    /// (it cancels), a control request gets 5 s, an iso packet 1 s.
    public struct Timeouts: Sendable {
        public var control: UInt32 = 5000
        public var bulk: UInt32 = 0
        public var interrupt: UInt32 = 0
        public var isochronous: UInt32 = 1000
        public init() {}
    }

    public let descriptor: USBDeviceDescriptor
    public let speed: USBSpeed
    public let info: USBDeviceInfo
    private let context: LibUSBContext
    private let device: OpaquePointer              // libusb_device *, referenced
    private let configurations: [UInt8: USBConfigurationDescriptor]
    private let timeouts: Timeouts
    private let transfers = LibUSBTransferSet()
    private let logger: Logger
    /// Held for the whole of each blocking operation (open, close, set
    /// configuration...), so they never interleave; `state` is for quick reads.
    private let operation = LibUSBLocked(())
    private let state = LibUSBLocked(State())

    private struct State {
        var handle: OpaquePointer?
        var configuration: UInt8 = 0
        var alt: [UInt8: UInt8] = [:]
        var claimed: Set<UInt8> = []
        /// Interfaces whose kernel driver we detached, to re-attach on close.
        var detached: Set<UInt8> = []
        /// Transfers between taking the handle and giving it back; close waits for 0.
        var active = 0
        var closing = false
        /// A handle made before `open` (see `Wrapped`), used by the first open.
        var wrapped: Wrapped?
        /// The usbfs node behind the wrapped handle, closed with it (libusb leaves it open).
        var wrappedFD: Int32?
    }

    /// A device libusb does not list (no udevd, `HotplugSource.kernel`):
    /// its usbfs node opened by the monitor and given to libusb with
    /// libusb_wrap_sys_device. libusb drives it like one it opened, but
    /// leaves the node open on libusb_close: closing it is ours.
    struct Wrapped {
        var handle: OpaquePointer
        var fd: Int32
    }

    init(device: OpaquePointer, info: USBDeviceInfo, context: LibUSBContext, timeouts: Timeouts, logger: Logger,
         wrapped: Wrapped? = nil) {
        // Our own reference: libusb_close drops the handle's, which for a
        // wrapped device is the only other one.
        libusb_ref_device(device)
        self.device = device
        self.info = info
        self.context = context
        self.timeouts = timeouts
        var logger = logger
        logger[metadataKey: "usb"] = "\(info.port)"
        self.logger = logger
        var d = libusb_device_descriptor()
        _ = libusb_get_device_descriptor(device, &d)
        descriptor = LibUSBDescriptors.device(d, strings: info)
        speed = info.speed ?? .full
        configurations = LibUSBDescriptors.configurations(of: device, context: context.context,
                                                          count: d.bNumConfigurations)
        if let wrapped { state.withLock { $0.wrapped = wrapped } }
    }

    deinit {
        // Normally `close` ran; this is the fallback for a dropped device.
        if state.withLock({ $0.handle }) != nil { closeBlocking() }
        if let never = state.withLock({ s in defer { s.wrapped = nil }; return s.wrapped }) {    // made, never opened
            libusb_close(never.handle)
            closeDescriptor(never.fd)
        }
        libusb_unref_device(device)
    }

    // MARK: Opening and closing

    public func open() async throws {
        try await libusbBlocking { self.openBlocking() }.get()
    }

    private func openBlocking() -> Result<Void, DeviceError> {
        operation.withLock { _ in
            if state.withLock({ $0.handle }) != nil { return .success(()) }
            var handle: OpaquePointer?
            if let wrapped = state.withLock({ s in defer { s.wrapped = nil }; return s.wrapped }) {
                handle = wrapped.handle
                state.withLock { $0.wrappedFD = wrapped.fd }
            } else {
                // Also a wrapped device once closed: libusb opens its node again by bus and address.
                let rc = libusb_open(device, &handle)
                guard rc == 0, handle != nil else { return .failure(LibUSBStatus.openError(rc, info)) }
            }
            guard let handle else { return .failure(.io("open \(info.port): no handle")) }
            var value: Int32 = 0
            _ = libusb_get_configuration(handle, &value)
            state.withLock {
                $0.handle = handle
                $0.configuration = UInt8(clamping: value)
                $0.alt = [:]
            }
            if let error = claimInterfaces(handle) {
                releaseInterfaces(handle, reattach: true)
                state.withLock { $0.handle = nil }
                closeHandle(handle)
                return .failure(error)
            }
            logger.debug("opened", metadata: ["configuration": "\(value)"])
            return .success(())
        }
    }

    /// Detaches kernel drivers from, and claims, every interface of the
    /// active configuration.
    private func claimInterfaces(_ handle: OpaquePointer) -> DeviceError? {
        let numbers = Set(activeConfigurationNow()?.interfaces.map(\.number) ?? []).sorted()
        for n in numbers {
            if libusb_kernel_driver_active(handle, Int32(n)) == 1 {
                let rc = libusb_detach_kernel_driver(handle, Int32(n))
                if rc == 0 {
                    state.withLock { _ = $0.detached.insert(n) }
                } else if rc != LIBUSB_ERROR_NOT_FOUND.rawValue {
                    return LibUSBStatus.deviceError(rc, "detach kernel driver of \(info.port) interface \(n)")
                }
            }
            let rc = libusb_claim_interface(handle, Int32(n))
            guard rc == 0 else { return LibUSBStatus.deviceError(rc, "claim \(info.port) interface \(n)") }
            state.withLock { _ = $0.claimed.insert(n) }
        }
        return nil
    }

    private func releaseInterfaces(_ handle: OpaquePointer, reattach: Bool) {
        let (claimed, detached) = state.withLock { s in
            defer {
                s.claimed = []
                if reattach { s.detached = [] }
            }
            return (s.claimed, s.detached)
        }
        for n in claimed.sorted() { _ = libusb_release_interface(handle, Int32(n)) }
        guard reattach else { return }
        for n in detached.sorted() {
            let rc = libusb_attach_kernel_driver(handle, Int32(n))
            if rc != 0 && rc != LIBUSB_ERROR_NO_DEVICE.rawValue {
                logger.notice("could not re-attach the kernel driver of interface \(n): \(LibUSBStatus.name(rc))")
            }
        }
    }

    /// Cancels what is in flight, waits (bounded) for libusb to give those
    /// transfers back, then releases the interfaces, re-attaches the kernel
    /// drivers and closes the handle.
    public func close() async {
        state.withLock { $0.closing = true }
        var waited: UInt64 = 0
        while state.withLock({ $0.active }) > 0 && waited < Self.closeDrainNanoseconds {
            transfers.cancelAll()     // again each round: one may have been submitted meanwhile
            try? await Task.sleep(nanoseconds: 2_000_000)
            waited += 2_000_000
        }
        let left = state.withLock { $0.active }
        guard left == 0 else {
            // Freeing the handle under libusb's feet would crash later; a
            // leaked handle of a device that stopped answering is the lesser harm.
            logger.error("\(left) transfers not given back by libusb; leaving the handle open")
            return
        }
        await libusbBlocking { self.closeBlocking() }
        state.withLock { $0.closing = false }
    }

    private func closeBlocking() {
        operation.withLock { _ in
            guard let handle = state.withLock({ $0.handle }) else { return }
            releaseInterfaces(handle, reattach: true)
            state.withLock { $0.handle = nil }
            closeHandle(handle)
        }
    }

    private func closeHandle(_ handle: OpaquePointer) {
        libusb_close(handle)
        if let fd = state.withLock({ s in defer { s.wrappedFD = nil }; return s.wrappedFD }) { closeDescriptor(fd) }
    }

    // MARK: Configuration

    public var activeConfiguration: USBConfigurationDescriptor? {
        get async { activeConfigurationNow() }
    }

    private func activeConfigurationNow() -> USBConfigurationDescriptor? {
        let (value, alt) = state.withLock { ($0.configuration, $0.alt) }
        guard var c = configurations[value] else { return nil }
        c.interfaces = c.active(alt: alt)
        return c
    }

    private func endpoint(_ address: UInt8) -> USBEndpointDescriptor? {
        activeConfigurationNow()?.interfaces.lazy.flatMap(\.endpoints).first { $0.address == address }
    }

    public func setConfiguration(_ value: UInt8) async -> USBTransferStatus {
        await libusbBlocking { self.setConfigurationNow(value) }
    }

    /// Blocks in the kernel: on a `libusbBlocking` thread only.
    private func setConfigurationNow(_ value: UInt8) -> USBTransferStatus {
        withHandle { handle in
            // The kernel refuses a new configuration while interfaces are
            // claimed; release them (drivers stay detached) and claim the new ones.
            self.releaseInterfaces(handle, reattach: false)
            let rc = libusb_set_configuration(handle, Int32(value))
            if rc == 0 { self.state.withLock { $0.configuration = value; $0.alt = [:] } }
            if let error = self.claimInterfaces(handle) {
                self.logger.warning("after set configuration \(value): \(error)")
            }
            return LibUSBStatus.error(rc)
        }
    }

    public func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus {
        await libusbBlocking { self.setAltSettingNow(interface: interface, alt: alt) }
    }

    /// Blocks in the kernel: on a `libusbBlocking` thread only.
    private func setAltSettingNow(interface: UInt8, alt: UInt8) -> USBTransferStatus {
        withHandle { handle in
            let rc = libusb_set_interface_alt_setting(handle, Int32(interface), Int32(alt))
            if rc == 0 { self.state.withLock { $0.alt[interface] = alt } }
            return LibUSBStatus.error(rc)
        }
    }

    public func altSetting(interface: UInt8) async -> UInt8? {
        guard activeConfigurationNow()?.interfaces.contains(where: { $0.number == interface }) == true else { return nil }
        return state.withLock { $0.alt[interface] ?? 0 }
    }

    public func reset() async -> USBTransferStatus {
        await libusbBlocking { self.withHandle { handle in
            let rc = libusb_reset_device(handle)
            // Alt settings go back to 0; NOT_FOUND means the device came back
            // as a different one (re-enumerated): for us it is gone.
            if rc == 0 { self.state.withLock { $0.alt = [:] } }
            return rc == LIBUSB_ERROR_NOT_FOUND.rawValue ? .noDevice : LibUSBStatus.error(rc)
        } }
    }

    public func clearHalt(endpoint: UInt8) async -> USBTransferStatus {
        await libusbBlocking { self.clearHaltNow(endpoint: endpoint) }
    }

    /// Blocks in the kernel: on a `libusbBlocking` thread only.
    private func clearHaltNow(endpoint: UInt8) -> USBTransferStatus {
        withHandle { LibUSBStatus.error(libusb_clear_halt($0, endpoint)) }
    }

    private func withHandle(_ body: (OpaquePointer) -> USBTransferStatus) -> USBTransferStatus {
        operation.withLock { _ in
            guard let handle = state.withLock({ $0.handle }) else { return .noDevice }
            return body(handle)
        }
    }

    // MARK: Bulk streams (USB 3)

    public func allocateStreams(endpoints: [UInt8], count: UInt32) async -> USBTransferStatus {
        await libusbBlocking { self.withHandle { handle in
            var eps = endpoints
            let rc = libusb_alloc_streams(handle, count, &eps, Int32(eps.count))
            // Fewer streams than asked for is a failure for the VM (usbredirhost does the same).
            if rc >= 0 && UInt32(rc) < count { return .ioError }
            return LibUSBStatus.error(rc)
        } }
    }

    public func freeStreams(endpoints: [UInt8]) async -> USBTransferStatus {
        await libusbBlocking { self.withHandle { handle in
            var eps = endpoints
            return LibUSBStatus.error(libusb_free_streams(handle, &eps, Int32(eps.count)))
        } }
    }

    // MARK: Transfers

    /// Submits to the kernel now: a VM with four reads in flight on an
    /// endpoint has four URBs queued there, as with usbredirhost.
    public var queuesTransfers: Bool { true }

    public func submit(_ request: USBTransferRequest,
                       completion: @escaping USBTransferCompletion) -> (any USBCancellableTransfer)? {
        switch request {
        case .control(let setup, let data):
            if let blocking = blockingRequest(setup) {
                // Through usbfs's own calls, which block: on one of the
                // BlockingThreads, completing from there (not cancellable).
                libusbBlocking(blocking) { completion(.failed($0)) }
                return nil
            }
            return start(.init(kind: .control(setup), endpoint: 0, length: Int(setup.length), data: data,
                               timeoutMilliseconds: timeouts.control), completion)
        case .data(let endpoint, let length, let data, let streamID):
            return start(self.request(endpoint: endpoint, length: length, data: data, streamID: streamID), completion)
        case .isochronous(let endpoint, let length, let data):
            return start(isoRequest(endpoint: endpoint, length: length, data: data), completion)
        }
    }

    /// The standard requests the kernel wants made through its own calls
    /// rather than as control transfers; nil for any other.
    private func blockingRequest(_ setup: USBSetupPacket) -> (@Sendable () -> USBTransferStatus)? {
        switch (setup.requestType, setup.request) {
        case (0x02, 1) where setup.value == 0 && setup.index & 0x0f != 0:
            // CLEAR_FEATURE(ENDPOINT_HALT): through the kernel, which also
            // resets the host side's data toggle (usbredirhost does the same).
            // Not for endpoint 0: the kernel refuses to clear-halt it, while
            // the request itself is valid and goes to the device as it is
            // (the kernel's usbtest case 10 sends it).
            { self.clearHaltNow(endpoint: UInt8(setup.index & 0xff)) }
        case (0x00, 9):     // SET_CONFIGURATION: usbfs wants its own ioctl
            { self.setConfigurationNow(UInt8(setup.value & 0xff)) }
        case (0x01, 11):    // SET_INTERFACE
            { self.setAltSettingNow(interface: UInt8(setup.index & 0xff), alt: UInt8(setup.value & 0xff)) }
        case (0x00, 5):     // SET_ADDRESS: the host controller owns addressing
            { .success }
        default:
            nil
        }
    }

    /// The libusb transfer for a bulk or interrupt request from the VM; nil when it is invalid.
    private func request(endpoint address: UInt8, length: Int, data: ByteBuffer?, streamID: UInt32) -> LibUSBTransferRequest? {
        guard let ep = endpoint(address), ep.type == .bulk || ep.type == .interrupt else { return nil }
        let isIn = address & 0x80 != 0
        var count = isIn ? length : (data?.readableBytes ?? 0)
        guard count >= 0, count <= Self.maxTransferLength else { return nil }
        if ep.type == .interrupt {
            // One interval's worth: an interrupt IN of several full packets
            // would only end on a short one, and a keyboard never sends one.
            if isIn { count = min(count, max(1, LibUSBDescriptors.bytesPerInterval(ep.maxPacketSize))) }
            return .init(kind: .interrupt, endpoint: address, length: count, data: data,
                         timeoutMilliseconds: timeouts.interrupt)
        }
        return .init(kind: .bulk(streamID: streamID), endpoint: address, length: count, data: data,
                     timeoutMilliseconds: timeouts.bulk)
    }

    /// One iso packet's transfer, at most a packet long; nil when it is invalid.
    private func isoRequest(endpoint address: UInt8, length: Int, data: ByteBuffer?) -> LibUSBTransferRequest? {
        guard let ep = endpoint(address), ep.type == .isochronous else { return nil }
        let isIn = address & 0x80 != 0
        var count = isIn ? length : (data?.readableBytes ?? 0)
        let packetMax = Int(libusb_get_max_iso_packet_size(device, address))
        if packetMax > 0 {
            if isIn { count = min(count, packetMax) } else if count > packetMax { return nil }
        }
        guard count >= 0 else { return nil }
        return .init(kind: .isochronous, endpoint: address, length: count, data: data,
                     timeoutMilliseconds: timeouts.isochronous)
    }

    /// The open handle, counted as in use until `giveBackHandle` (close waits for none); nil when closed or closing.
    private func takeHandle() -> OpaquePointer? {
        state.withLock { s -> OpaquePointer? in
            guard let handle = s.handle, !s.closing else { return nil }
            s.active += 1
            return handle
        }
    }

    private func giveBackHandle() {
        state.withLock { $0.active -= 1 }
    }
}

extension LibUSBDevice {
    private func start(_ request: LibUSBTransferRequest?,
                       _ completion: @escaping @Sendable (USBTransferResult) -> Void) -> (any USBCancellableTransfer)? {
        guard let request else {
            completion(.failed(.invalid))
            return nil
        }
        guard let handle = takeHandle() else {
            completion(.failed(.noDevice))
            return nil
        }
        return LibUSBPendingTransfer.start(request, on: handle, owner: transfers) { [self] result in
            giveBackHandle()
            completion(result)
        }
    }
}
