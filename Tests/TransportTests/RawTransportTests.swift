import Common
import Foundation
import NIOCore
import NIOPosix
import Testing
import TestSupport
import Transport
import USBRedirProtocol

/// Raw usbredir over TCP against QEMU, in both directions.
@Suite(.serialized, .requires(.qemu), .timeLimit(.minutes(3)))
struct RawTransportTests {
    @Test func connectsToQEMUsListeningChardev() async throws {
        var o = QEMUVM.Options()
        o.redirListenPort = freeLoopbackPort()
        let vm = try QEMUVM(o)
        defer { vm.stop() }
        let address = HostPort(host: "127.0.0.1", port: o.redirListenPort!)
        try await withTimeout(10) {
            try await RawUSBRedir.withConnection(to: address) {
                try await expectQEMUHello($0)
            }
        }
    }

    @Test func acceptsQEMUConnectingToUsAndServesEachPeerAnew() async throws {
        let listener = try await RawUSBRedirListener.bind(HostPort(host: "127.0.0.1", port: 0))
        defer { listener.close() }
        var o = QEMUVM.Options()
        o.redirConnectPort = listener.localAddress.port
        let vm = try QEMUVM(o)
        defer { vm.stop() }
        let served = try await withTimeout(20) {
            try await withThrowingTaskGroup(of: Int.self) { group in
                group.addTask {
                    var count = 0
                    try? await listener.serve { connection in
                        try await expectQEMUHello(connection)
                        count += 1
                        connection.writer.close()   // QEMU reconnects (reconnect=1): a new peer
                        if count == 2 { listener.close() }
                    }
                    return count
                }
                let n = try await group.next()!
                return n
            }
        }
        #expect(served == 2)
    }
}

/// A slow reader on one connection must not stall another: each connection
/// has its own back-pressure. The peers are Swift senders on loopback.
@Suite(.timeLimit(.minutes(2))) struct TransportBackPressureTests {
    static let chunk = ByteBuffer(bytes: [UInt8](repeating: 0xab, count: 64 * 1024))

    /// A listener whose single peer gets `chunks` chunks.
    static func sender(chunks: Int) async throws -> (RawUSBRedirListener, Task<Void, Never>) {
        let listener = try await RawUSBRedirListener.bind(HostPort(host: "127.0.0.1", port: 0))
        let task = Task<Void, Never> {
            try? await listener.serve { c in
                for _ in 0..<chunks { try await c.writer.send(chunk, compressible: false) }
                // Stay connected: the reader decides when it has enough.
                try await Task.sleep(nanoseconds: 60_000_000_000)
            }
        }
        return (listener, task)
    }

    @Test func aSlowReaderDoesNotStallAnotherConnection() async throws {
        let (flood, floodTask) = try await Self.sender(chunks: 1024)     // 64 MiB, never drained
        let (other, otherTask) = try await Self.sender(chunks: 256)      // 16 MiB
        defer { flood.close(); other.close(); floodTask.cancel(); otherTask.cancel() }
        let received = try await withTimeout(60) {
            try await RawUSBRedir.withConnection(to: flood.localAddress) { slow in
                _ = try await slow.reader.read()    // then this reader stalls on purpose
                var received = 0
                let expected = 256 * Self.chunk.readableBytes
                try await RawUSBRedir.withConnection(to: other.localAddress) { fast in
                    while received < expected, let b = try await fast.reader.read() { received += b.readableBytes }
                }
                return received
            }
        }
        #expect(received == 256 * Self.chunk.readableBytes)
    }
}
