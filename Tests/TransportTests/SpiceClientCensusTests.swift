import Common
import Foundation
import Testing
import TestSupport
import Transport

/// The census reads this host's socket table: a connection accepted on a
/// listening port counts while it is established, and a server that is not
/// on this host cannot be counted at all.
@Suite struct SpiceClientCensusTests {
    @Test func countsAnEstablishedClientOfALocalServer() throws {
        let listener = try TCPSockets.listen()
        defer { close(listener.fd) }
        let address = HostPort(host: "127.0.0.1", port: listener.port)
        #expect(SpiceClientCensus.otherClientsConnected(to: address) == false)
        let client = try TCPSockets.connect(port: listener.port)
        let accepted = accept(listener.fd, nil, nil)
        #expect(accepted >= 0)
        #expect(SpiceClientCensus.otherClientsConnected(to: address) == true)
        // The same server named by the loopback name, as a profile may.
        #expect(SpiceClientCensus.otherClientsConnected(to: HostPort(host: "localhost", port: listener.port)) == true)
        close(client)
        close(accepted)
        #expect(SpiceClientCensus.otherClientsConnected(to: address) == false)
    }

    @Test func cannotCountTheClientsOfARemoteServer() {
        // TEST-NET-1 (RFC 5737) is never an address of this host.
        #expect(SpiceClientCensus.otherClientsConnected(to: HostPort(host: "192.0.2.1", port: 5930)) == nil)
    }
}

/// Plain POSIX sockets: the test must not share an event loop with the code
/// under test.
enum TCPSockets {
    struct Failure: Error { let what: String }

    static func listen() throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, bound == 0, Glibc.listen(fd, 4) == 0 else { throw Failure(what: "listen: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = loopback(port: port)
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard status == 0 else { throw Failure(what: "connect: errno \(errno)") }
        return fd
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}

/// The same count for a SPICE server on a unix socket (`-spice unix=on`).
@Suite struct SpiceUnixClientCensusTests {
    @Test func countsAConnectedClientOfAUnixSocketServer() throws {
        let dir = try makeTemporaryDirectory("usbredir-census")
        let path = dir.appendingPathComponent("spice.sock").path
        let listener = try UnixSockets.listen(path)
        defer { close(listener) }
        #expect(SpiceClientCensus.otherClientsConnected(to: .unix(path)) == false)
        let client = try UnixSockets.connect(path)
        let accepted = accept(listener, nil, nil)
        #expect(accepted >= 0)
        #expect(SpiceClientCensus.otherClientsConnected(to: .unix(path)) == true)
        close(client)
        close(accepted)
        #expect(SpiceClientCensus.otherClientsConnected(to: .unix(path)) == false)
    }
}

enum UnixSockets {
    static func listen(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = Self.address(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0, Glibc.listen(fd, 4) == 0 else { throw TCPSockets.Failure(what: "listen: errno \(errno)") }
        return fd
    }

    static func connect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = Self.address(path)
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard status == 0 else { throw TCPSockets.Failure(what: "connect: errno \(errno)") }
        return fd
    }

    private static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8.prefix(raw.count - 1)) + [0])
        }
        return address
    }
}
