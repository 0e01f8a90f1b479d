#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A mutex around a value, for state shared with libusb's event thread
/// (which is not a Swift concurrency thread, so actors cannot be used there).
final class LibUSBLocked<Value>: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var value: Value

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(&mutex, nil)
    }

    deinit { pthread_mutex_destroy(&mutex) }

    func withLock<T, E: Error>(_ body: (inout Value) throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body(&value)
    }
}

/// Runs `body` on one of the `BlockingThreads` and resumes the caller
/// with its result. For the few libusb calls that block in the kernel
/// (claim, set configuration, reset, clear halt: each may wait for a
/// control transfer to the device), so that neither a Swift concurrency
/// thread nor a NIO event loop ever waits on USB.
func libusbBlocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
        libusbBlocking(body) { continuation.resume(returning: $0) }
    }
}

/// The same for a caller that must not wait (a transfer's completion):
/// `done` gets the result on that thread, with no hop through a task.
func libusbBlocking<T: Sendable>(_ body: @escaping @Sendable () -> T, then done: @escaping @Sendable (T) -> Void) {
    BlockingThreads.shared.run { done(body()) }
}

/// Reads a small text attribute file (sysfs), without its trailing newline.
/// Nil when it does not exist or is empty.
func readAttributeFile(_ path: String, limit: Int = 4096) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: limit)
    var count = 0
    while count < limit {
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, limit - count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        count += n
    }
    var text = String(decoding: bytes[..<count], as: UTF8.self)
    while text.last == "\n" || text.last == "\0" { text.removeLast() }
    return text.isEmpty ? nil : text
}

/// close(2), for types with a `close` of their own.
func closeDescriptor(_ fd: Int32) {
    _ = close(fd)
}
