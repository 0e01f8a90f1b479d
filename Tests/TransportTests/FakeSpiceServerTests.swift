import Common
import Foundation
import NIOCore
import NIOPosix
import Testing
import TestSupport
import Transport

/// QEMU never sent SET_ACK or NOTIFY in our runs, but the protocol allows
/// them: a scripted SPICE server in the test sends them and checks the
/// client's answers (ACK_SYNC, one ACK per window, PONG).
@Suite(.timeLimit(.minutes(2))) struct FakeSpiceServerTests {
    /// A DER SubjectPublicKeyInfo of a 1024-bit RSA key, as spice-server sends.
    static func publicKeyDER() throws -> [UInt8] {
        let dir = try makeTemporaryDirectory("usbredir-rsa")
        let key = dir.appendingPathComponent("k.pem").path, der = dir.appendingPathComponent("k.der").path
        try runCommand("/usr/bin/openssl", ["genrsa", "-out", key, "1024"])
        try runCommand("/usr/bin/openssl", ["rsa", "-in", key, "-pubout", "-outform", "DER", "-out", der])
        return Array(try Data(contentsOf: URL(fileURLWithPath: der)))
    }

    /// What the fake server saw from the client, in order (type of each message).
    actor Seen {
        var types: [UInt16] = []
        var ackSyncGeneration: UInt32?
        var pongBodies: [Int] = []
        func add(_ t: UInt16, _ body: ByteBuffer) {
            types.append(t)
            var b = body
            if t == 1 { ackSyncGeneration = b.readInteger(endianness: .little) }
            if t == 3 { pongBodies.append(body.readableBytes) }
        }
    }

    static func frame(_ type: UInt16, _ body: [UInt8] = []) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(type, endianness: .little)
        b.writeInteger(UInt32(body.count), endianness: .little)
        b.writeBytes(body)
        return b
    }

    static func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }

    @Test func answersSetAckPingAndNotify() async throws {
        let pubkey = try Self.publicKeyDER()
        #expect(pubkey.count == 162)
        let seen = Seen()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0) { ch in
                ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch) }
            }
        let port = server.channel.localAddress!.port!
        let serverTask = Task {
            try await server.executeThenClose { clients in
                for try await client in clients {
                    try await client.executeThenClose { input, output in
                        try await Self.script(input, output, pubkey: pubkey, seen: seen)
                    }
                    return
                }
            }
        }
        defer { serverTask.cancel() }
        let session = try await SpiceSession.connect(
            SpiceEndpointConfiguration(address: HostPort(host: "127.0.0.1", port: port)), logger: testLogger)
        defer { session.close() }
        #expect(session.sessionID == 0x1234 && session.usbredirChannelIDs == [0])
        // The script ends by closing; wait for the client to have answered everything.
        _ = try? await serverTask.value
        let types = await seen.types
        #expect(await seen.ackSyncGeneration == 7)
        #expect(await seen.pongBodies == [12], "PONG echoes id and timestamp only")
        #expect(types.contains(104), "ATTACH_CHANNELS")
        // Window 2: the 6 messages after SET_ACK earn 3 ACKs.
        #expect(types.filter { $0 == 2 }.count == 3, "client sent \(types)")
    }

    /// Link, then MAIN_INIT, SET_ACK(7, window 2), NOTIFY, PING, CHANNELS_LIST and filler.
    static func script(_ input: NIOAsyncChannelInboundStream<ByteBuffer>, _ output: NIOAsyncChannelOutboundWriter<ByteBuffer>,
                       pubkey: [UInt8], seen: Seen) async throws {
        var buffer = ByteBuffer()
        var iterator = input.makeAsyncIterator()
        func read(_ n: Int) async throws -> ByteBuffer {
            while buffer.readableBytes < n {
                guard var chunk = try await iterator.next() else { throw TransportError.closedByPeer }
                buffer.writeBuffer(&chunk)
            }
            return buffer.readSlice(length: n)!
        }
        var header = try await read(16)
        header.moveReaderIndex(forwardBy: 12)
        _ = try await read(Int(header.readInteger(endianness: .little, as: UInt32.self)!))
        var reply: [UInt8] = le32(0) + pubkey + le32(1) + le32(0) + le32(4 + 162 + 12) + le32(0b1011)
        reply = le32(0x5144_4552) + le32(2) + le32(2) + le32(UInt32(reply.count)) + reply
        try await output.write(ByteBuffer(bytes: reply))
        _ = try await read(4 + 128)                       // auth mechanism + ticket
        try await output.write(ByteBuffer(bytes: le32(0)))
        try await output.write(frame(103, le32(0x1234) + [UInt8](repeating: 0, count: 28)))   // MAIN_INIT
        try await output.write(frame(3, le32(7) + le32(2)))                                    // SET_ACK
        try await output.write(frame(7, [UInt8](repeating: 0, count: 20) + le32(3) + Array("hi\0".utf8)))  // NOTIFY
        try await output.write(frame(4, le32(1) + [UInt8](repeating: 9, count: 8) + [UInt8](repeating: 0, count: 100)))  // PING
        func next() async throws {
            var h = try await read(6)
            let type: UInt16 = h.readInteger(endianness: .little)!
            let size: UInt32 = h.readInteger(endianness: .little)!
            await seen.add(type, try await read(Int(size)))
        }
        while !(await seen.types.contains(104)) { try await next() }   // until ATTACH_CHANNELS
        try await output.write(frame(104, le32(1) + [9, 0]))           // CHANNELS_LIST: usbredir 0
        for _ in 0..<3 { try await output.write(frame(999)) }          // filler, unknown to the client
        while (await seen.types.filter { $0 == 2 }.count) < 3 { try await next() }
    }
}
