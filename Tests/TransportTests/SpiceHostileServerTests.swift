import Common
import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import Transport

/// Anything listening on a SPICE port can answer our link message before any
/// authentication. Its counts and offsets must end the connection attempt
/// with an error, never the process.
@Suite struct SpiceHostileServerTests {
    static func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }

    /// A link reply body: error 0, a 162-byte key (never used: parsing fails
    /// first), the caps counts and offset as given, then `caps`.
    static func replyBody(common: UInt32, channel: UInt32, offset: UInt32 = 178, caps: [UInt32] = [0b1011]) -> [UInt8] {
        le32(0) + [UInt8](repeating: 0x30, count: 162) + le32(common) + le32(channel) + le32(offset)
            + caps.flatMap(le32)
    }

    static func withHeader(_ body: [UInt8], size: UInt32? = nil) -> [UInt8] {
        le32(0x5144_4552) + le32(2) + le32(2) + le32(size ?? UInt32(body.count)) + body
    }

    /// Serves one client: reads its link message, sends `reply`, then waits
    /// for the client to close. Returns the port.
    static func serve(_ reply: [UInt8]) async throws -> (port: Int, task: Task<Void, any Error>) {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0) { ch in
                ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch) }
            }
        let port = server.channel.localAddress!.port!
        let task = Task {
            try await server.executeThenClose { clients in
                for try await client in clients {
                    try await client.executeThenClose { input, output in
                        var buffer = ByteBuffer()
                        var iterator = input.makeAsyncIterator()
                        while buffer.readableBytes < 16 {
                            guard var chunk = try await iterator.next() else { return }
                            buffer.writeBuffer(&chunk)
                        }
                        try await output.write(ByteBuffer(bytes: reply))
                        while try await iterator.next() != nil {}   // until the client closes
                    }
                    return
                }
            }
        }
        return (port, task)
    }

    /// Connecting to a server that sends `reply` must fail with notSpice.
    func expectRefused(_ reply: [UInt8], _ what: String) async throws {
        let (port, server) = try await Self.serve(reply)
        defer { server.cancel() }
        let config = SpiceEndpointConfiguration(address: HostPort(host: "127.0.0.1", port: port))
        do {
            let session = try await withTimeout(10) { try await SpiceSession.connect(config, logger: testLogger) }
            session.close()
            Issue.record("\(what): the link succeeded")
        } catch let error as TransportError {
            guard case .notSpice = error else {
                Issue.record("\(what): \(error), expected notSpice")
                return
            }
        }
    }

    @Test func capsCountsWhoseSumOverflowsAreRefused() async throws {
        // 0xffffffff + 2 wraps a UInt32. Before the fix: arithmetic overflow trap.
        try await expectRefused(Self.withHeader(Self.replyBody(common: 0xffff_ffff, channel: 2)), "common 2^32-1")
        try await expectRefused(Self.withHeader(Self.replyBody(common: 1, channel: 0xffff_ffff)), "channel 2^32-1")
        try await expectRefused(Self.withHeader(Self.replyBody(common: 0x8000_0000, channel: 0x8000_0000)), "2^31 + 2^31")
    }

    @Test func capsOutsideTheReplyAreRefused() async throws {
        try await expectRefused(Self.withHeader(Self.replyBody(common: 1, channel: 0, offset: 0xffff_fff0)), "offset near 2^32")
        try await expectRefused(Self.withHeader(Self.replyBody(common: 1, channel: 0, offset: 179)), "offset past the end")
        try await expectRefused(Self.withHeader(Self.replyBody(common: 2, channel: 0)), "two words, one sent")
        try await expectRefused(Self.withHeader(Self.replyBody(common: 0, channel: 1)), "channel caps without common")
    }

    @Test func replySizesOutsideTheLimitsAreRefused() async throws {
        try await expectRefused(Self.withHeader(Self.replyBody(common: 1, channel: 0), size: 0xffff_ffff), "size 2^32-1")
        try await expectRefused(Self.withHeader(Self.replyBody(common: 1, channel: 0), size: 3), "size 3")
    }

    // The parsing functions themselves, without a socket.

    @Test func linkReplyParserAcceptsWhatSpiceServerSends() throws {
        let r = try SpiceWire.linkReply(ByteBuffer(bytes: Self.replyBody(common: 1, channel: 1, caps: [0b1011, 1])))
        #expect(r.error == 0 && r.publicKey.count == 162 && r.commonCaps == [0b1011] && r.channelCaps == [1])
    }

    @Test func capsReaderNeverTrapsOnExtremeValues() {
        let body = ByteBuffer(bytes: [UInt8](repeating: 0, count: 200))
        for offset in [0, 196, 197, 200, 201, UInt32.max] as [UInt32] {
            for count in [0, 1, 2, 32, 33, UInt32.max] as [UInt32] {
                for skip in [0, 1, 32, UInt32.max] as [UInt32] {
                    if let words = SpiceWire.caps(body, offset: offset, count: count, skipping: skip) {
                        #expect(words.count == Int(count))
                        #expect(Int(offset) + 4 * Int(skip) + 4 * Int(count) <= 200)
                    }
                }
            }
        }
    }

    @Test func messageFramingRejectsOversizedAndShortInput() throws {
        var h = ByteBuffer()
        h.writeInteger(UInt16(101), endianness: .little)
        h.writeInteger(UInt32.max, endianness: .little)
        #expect(throws: TransportError.self) { try SpiceWire.messageHeader(h, miniHeader: true) }
        #expect(throws: TransportError.self) { try SpiceWire.messageHeader(h, miniHeader: false) }
        var c = ByteBuffer(bytes: [1])
        c.writeInteger(UInt32.max, endianness: .little)
        c.writeBytes([0, 1, 2])
        #expect(throws: TransportError.self) { try SpiceWire.compressedData(c) }
        var list = ByteBuffer()
        list.writeInteger(UInt32.max, endianness: .little)
        list.writeBytes([9, 0])
        #expect(throws: TransportError.self) { try SpiceWire.usbredirChannels(list) }
    }
}
