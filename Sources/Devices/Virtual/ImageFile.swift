#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// A raw disk image, read and written at byte offsets.
final class ImageFile: @unchecked Sendable {   // used only from its device's actor
    let path: String
    let size: UInt64
    let readOnly: Bool
    private let fd: Int32

    init(path: String, readOnly: Bool) throws(DeviceError) {
        let fd = Glibc.open(path, readOnly ? O_RDONLY : O_RDWR)
        guard fd >= 0 else { throw .io("cannot open \(path): \(String(cString: strerror(errno)))") }
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
}
