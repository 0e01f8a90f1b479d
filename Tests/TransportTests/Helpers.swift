import Common
import Logging
import NIOCore
import Testing
import TestSupport
import Transport
import USBRedirProtocol

let testLogger = Logger(label: "usbredir.test")

extension USBRedirByteWriter {
    /// Sends `bytes` as one packet the way the session does (`enqueue`, the
    /// production path: framing, LZ4 when `compressible`) and waits until it
    /// is on the socket.
    func send(_ bytes: ByteBuffer, compressible: Bool) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            enqueue([OutgoingPacket(parts: [bytes], compressible: compressible)]) { written in
                if written { c.resume() } else { c.resume(throwing: TransportError.closedByPeer) }
            }
        }
    }
}

/// Reads from a connection until `count` packets parsed (as the usb-host).
func readPackets(_ connection: USBRedirConnection, count: Int, parser: inout USBRedirParser) async throws -> [USBRedirPacket] {
    var packets: [USBRedirPacket] = []
    while packets.count < count {
        while let p = try parser.nextPacket() {
            packets.append(p)
            if packets.count == count { return packets }
        }
        guard let bytes = try await connection.reader.read() else { throw TransportError.closedByPeer }
        parser.append(bytes)
    }
    return packets
}

func hostParser() -> USBRedirParser {
    USBRedirParser(role: .host, capabilities: .all)
}

/// QEMU's usbredir hello, which it sends first on every link.
func expectQEMUHello(_ connection: USBRedirConnection) async throws {
    var parser = hostParser()
    let packets = try await readPackets(connection, count: 1, parser: &parser)
    guard case .hello(let hello) = packets[0].message else {
        Issue.record("first packet is \(packets[0].message.type), not hello")
        return
    }
    #expect(hello.version.hasPrefix("qemu usb-redir guest"))
    #expect(hello.capabilities.contains(.ids64Bit))
}

/// Runs `body` but fails if it takes longer than `seconds`.
func withTimeout<R: Sendable>(_ seconds: Double, _ body: @escaping @Sendable () async throws -> R) async throws -> R {
    try await withThrowingTaskGroup(of: R?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            return nil
        }
        guard let first = try await group.next(), let result = first else {
            group.cancelAll()
            throw TimeoutError(seconds: seconds)
        }
        group.cancelAll()
        return result
    }
}

struct TimeoutError: Error, CustomStringConvertible {
    var seconds: Double
    var description: String { "timed out after \(seconds) s" }
}

/// A QEMU serving SPICE on a loopback port, or on a unix socket when `unix`.
func spiceVM(channels: Int = 2, password: String? = nil, unix: Bool = false,
             configure: (inout QEMUVM.Options) -> Void = { _ in }) throws -> (QEMUVM, SpiceEndpointConfiguration) {
    var o = QEMUVM.Options()
    let server: SpiceServerAddress
    if unix {
        o.spiceUnixSocket = try makeTemporaryDirectory("usbredir-spice-unix").appendingPathComponent("spice.sock").path
        server = .unix(o.spiceUnixSocket!)
    } else {
        o.spicePort = freeLoopbackPort()
        server = .tcp(HostPort(host: "127.0.0.1", port: o.spicePort!))
    }
    o.usbredirChannels = channels
    o.spicePassword = password
    configure(&o)
    let vm = try QEMUVM(o)
    return (vm, SpiceEndpointConfiguration(server: server, password: password ?? ""))
}
