#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import NIOCore

/// A raw disk image, read and written at byte offsets. Reads, writes and
/// syncs run on the file-I/O pool, several at once (pread and pwrite take
/// their offset, not the file's); the lock state and the sync count are
/// behind locks of their own.
final class ImageFile: @unchecked Sendable {   // fd, path, size, readOnly: immutable
    let path: String
    let size: UInt64
    let readOnly: Bool
    private let fd: Int32

    init(path: String, readOnly: Bool) throws(DeviceError) {
        let fd = Glibc.open(path, readOnly ? O_RDONLY : O_RDWR)
        guard fd >= 0 else { throw .io("cannot open \(path): \(String(cString: strerror(errno)))") }
        do {
            try Self.lock(fd, path: path, readOnly: readOnly)
        } catch {
            Glibc.close(fd)
            throw error
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            Glibc.close(fd)
            throw .io("cannot stat \(path)")
        }
        self.fd = fd
        self.path = path
        self.size = UInt64(st.st_size)
        self.readOnly = readOnly
    }

    deinit { Glibc.close(fd) }

    private let locked = NIOLockedValueBox(true)

    /// One writer or any number of readers, across assignments and
    /// processes: flock is per open file, so two opens in one process
    /// exclude each other too. Taken at init; released by `unlock` (the
    /// device was closed) or when the file is closed; `lock` takes it again.
    private static func lock(_ fd: Int32, path: String, readOnly: Bool) throws(DeviceError) {
        guard flock(fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0 else { return }
        let e = errno
        if e == EWOULDBLOCK {
            throw .busy("image \(path) is in use: another assignment or process has it open"
                        + (readOnly ? " read-write" : ""))
        }
        throw .io("cannot lock \(path): \(String(cString: strerror(e)))")
    }

    func lock() throws(DeviceError) {
        let error = locked.withLockedValue { locked -> DeviceError? in
            guard !locked else { return nil }
            do throws(DeviceError) { try Self.lock(fd, path: path, readOnly: readOnly) } catch { return error }
            locked = true
            return nil
        }
        if let error { throw error }
    }

    func unlock() {
        locked.withLockedValue { locked in
            guard locked else { return }
            _ = flock(fd, LOCK_UN)
            locked = false
        }
    }

    /// Reads `count` bytes at `offset` into one buffer (one syscall per chunk
    /// the kernel returns, not per block).
    func read(offset: UInt64, count: Int) -> ByteBuffer? {
        var buffer = ByteBuffer()
        var done = 0
        while done < count {
            let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count - done) { p in
                pread(fd, p.baseAddress!, count - done, off_t(offset) + off_t(done))
            }
            guard n > 0 else { return nil }
            done += n
        }
        return buffer
    }

    func write(_ data: ByteBuffer, offset: UInt64) -> Bool {
        data.withUnsafeReadableBytes { p in
            var done = 0
            while done < p.count {
                let n = pwrite(fd, p.baseAddress! + done, p.count - done, off_t(offset) + off_t(done))
                guard n > 0 else { return false }
                done += n
            }
            return true
        }
    }

    func sync() -> Bool { fsync(fd) == 0 }

    /// fdatasync calls that succeeded (tests check a write was made durable).
    var dataSyncs: Int { syncCount.withLockedValue { $0 } }
    private let syncCount = NIOLockedValueBox(0)

    /// Makes the written data durable (fdatasync: data and the metadata
    /// needed to read it back, not timestamps).
    func syncData() -> Bool {
        guard fdatasync(fd) == 0 else { return false }
        syncCount.withLockedValue { $0 += 1 }
        return true
    }
}
