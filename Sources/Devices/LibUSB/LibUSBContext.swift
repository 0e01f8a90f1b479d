import CLibUSB
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The process's one libusb context and the thread that runs its events.
///
/// Every asynchronous transfer completes, and every hotplug callback runs,
/// on that event thread; Swift tasks waiting for a transfer are resumed
/// from it and never block. One context per process, because libusb's
/// hotplug monitoring and device list are per context and several would
/// each poll every open device.
public final class LibUSBContext: @unchecked Sendable {
    /// How long one libusb_handle_events call may wait; it is woken early
    /// by libusb_interrupt_event_handler on shutdown, so this only bounds
    /// the check of the stop flag if a wake-up were lost.
    static let eventTimeoutMicroseconds = 200_000

    let context: OpaquePointer
    private let state = LibUSBLocked(State())

    private struct State {
        var running = true
        var thread: pthread_t?
    }

    private static let sharedContext = LibUSBLocked<LibUSBContext?>(nil)

    /// The process-wide context, created (with its event thread) on first use.
    public static func shared() throws(DeviceError) -> LibUSBContext {
        try sharedContext.withLock { (existing: inout LibUSBContext?) throws(DeviceError) -> LibUSBContext in
            if let existing { return existing }
            let made = try LibUSBContext()
            existing = made
            return made
        }
    }

    /// Stops the shared context's event thread and releases libusb. Call
    /// at process end, after every device is closed and every monitor gone.
    public static func shutdownShared() {
        let context = sharedContext.withLock { (c: inout LibUSBContext?) -> LibUSBContext? in
            defer { c = nil }
            return c
        }
        context?.shutdown()
    }

    private init() throws(DeviceError) {
        var ctx: OpaquePointer?
        let rc = libusb_init(&ctx)
        guard rc == 0, let ctx else { throw .io("libusb_init failed: \(LibUSBStatus.name(rc))") }
        context = ctx
        try startEventThread()
    }

    private func startEventThread() throws(DeviceError) {
        var thread = pthread_t()
        let me = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let context = Unmanaged<LibUSBContext>.fromOpaque(raw!).takeRetainedValue()
            context.runEvents()
            return nil
        }, me)
        guard rc == 0 else {
            Unmanaged<LibUSBContext>.fromOpaque(me).release()
            libusb_exit(context)
            throw .io("cannot start the libusb event thread (\(rc))")
        }
        state.withLock { $0.thread = thread }
    }

    private func runEvents() {
        var tv = timeval(tv_sec: 0, tv_usec: .init(Self.eventTimeoutMicroseconds))
        while state.withLock({ $0.running }) {
            let rc = libusb_handle_events_timeout_completed(context, &tv, nil)
            if rc == LIBUSB_ERROR_INTERRUPTED.rawValue { continue }
            if rc < 0 {
                // Not expected; back off rather than spin on a broken context.
                usleep(10_000)
            }
        }
    }

    /// Stops the event thread, waits for it, and exits libusb.
    func shutdown() {
        let thread = state.withLock { s -> pthread_t? in
            s.running = false
            defer { s.thread = nil }
            return s.thread
        }
        guard let thread else { return }
        libusb_interrupt_event_handler(context)
        pthread_join(thread, nil)
        libusb_exit(context)
    }
}
