import Foundation

/// A QEMU machine protocol client, enough for a test to run one command on
/// a VM's monitor socket (`set_password`, say) as an operator would.
public enum QMP {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Runs `command` (one JSON object) and returns QEMU's reply line; a reply
    /// that is an error throws.
    public static func execute(_ socketPath: String, _ command: String) throws -> String {
        let fd = try connect(socketPath)
        defer { close(fd) }
        var lines = LineReader(fd: fd)
        _ = try lines.next()                                  // the greeting
        try send(fd, #"{"execute":"qmp_capabilities"}"#)
        _ = try reply(&lines)
        try send(fd, command)
        return try reply(&lines)
    }

    static func connect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes + [0])
        }
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard status == 0 else {
            close(fd)
            throw Failure(description: "connect \(path): errno \(errno)")
        }
        return fd
    }

    private static func send(_ fd: Int32, _ json: String) throws {
        let bytes = Array((json + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw Failure(description: "write: errno \(errno)") }
    }

    /// The next line that answers a command (events in between are skipped).
    private static func reply(_ lines: inout LineReader) throws -> String {
        while true {
            let line = try lines.next()
            if line.contains(#""error""#) { throw Failure(description: "QMP: \(line)") }
            if line.contains(#""return""#) { return line }
        }
    }

    private struct LineReader {
        let fd: Int32
        var pending: [UInt8] = []

        mutating func next() throws -> String {
            while true {
                if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    return line
                }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &chunk, chunk.count)
                guard n > 0 else { throw Failure(description: "QMP socket closed or timed out (errno \(errno))") }
                pending += chunk[..<n]
            }
        }
    }
}

extension QEMUVM {
    /// Runs one QMP command on this VM.
    public func qmp(_ command: String) throws -> String { try QMP.execute(qmpSocket, command) }
}
