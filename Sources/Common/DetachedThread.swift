#if canImport(Glibc)
import Glibc
#endif

/// A thread of its own for a loop that blocks for the life of the process
/// (libvirt's event loop, the inotify reader). Foundation's `Thread` would
/// do, but it is not in FoundationEssentials, and the tool links only that
/// (full Foundation brings ICU, some 30 MB). Never joined.
public enum DetachedThread {
    /// Starts `body` on a new detached thread; false when it could not be
    /// created. `name` is for the reader (glibc's pthread_setname_np is not
    /// visible to Swift without _GNU_SOURCE).
    @discardableResult
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) -> Bool {
        final class Box: @unchecked Sendable {   // handed to the new thread once
            let name: String
            let body: @Sendable () -> Void
            init(_ name: String, _ body: @escaping @Sendable () -> Void) { self.name = name; self.body = body }
        }
        let box = Unmanaged.passRetained(Box(name, body)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let status = pthread_create(&thread, &attributes, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        if status != 0 { Unmanaged<Box>.fromOpaque(box).release() }
        return status == 0
    }
}
