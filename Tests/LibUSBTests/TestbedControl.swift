import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The child's line-protocol client of the testbed's control socket:
/// plug/unplug devices and read the device model's state.
enum TestbedControl {
    struct ModelState: Decodable {
        var claimed: [Int]
        var drivers: [String: String]
        var config: Int
        var alt: [String: Int]
        var halted: [Int]
        var clear_halt: Int
        var control_clear_feature: Int
        var reset: Int
        var discard: Int
        var last_stream_id: Int
        var streams: [String: Int]
        var detached: [Int]?
        var attached: [Int]?
        /// URBs submitted and not yet finished (a NAKed transfer stays here).
        var in_flight: Int?
    }

    @discardableResult
    static func send(_ command: String) throws -> String {
        guard let path = ProcessInfo.processInfo.environment[Umockdev.controlVariable] else {
            throw TestbedError(message: "no \(Umockdev.controlVariable)")
        }
        return try send(command, to: path)
    }

    /// Sends one command to the testbed listening on `path` (for tests that
    /// drive a testbed themselves rather than from a child under umockdev).
    @discardableResult
    static func send(_ command: String, to path: String) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestbedError(message: "socket failed") }
        defer { close(fd) }
        // A testbed that stops answering fails the test instead of hanging it.
        var limit = timeval(tv_sec: 15, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8.prefix(raw.count - 1)) + [0])
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw TestbedError(message: "cannot connect to \(path)") }
        let line = Array((command + "\n").utf8)
        guard write(fd, line, line.count) == line.count else { throw TestbedError(message: "write failed") }
        var reply = [UInt8]()
        var byte: UInt8 = 0
        var got = 0
        while reply.count < 1 << 16 {
            got = read(fd, &byte, 1)
            guard got == 1, byte != UInt8(ascii: "\n") else { break }
            reply.append(byte)
        }
        if got < 0 { throw TestbedError(message: "testbed: \(command): no reply within 15 s (errno \(errno))") }
        let text = String(decoding: reply, as: UTF8.self)
        if text.hasPrefix("error") { throw TestbedError(message: "testbed: \(command): \(text)") }
        return text
    }

    static func state(_ device: String) throws -> ModelState {
        try JSONDecoder().decode(ModelState.self, from: Data(send("state \(device)").utf8))
    }
}
