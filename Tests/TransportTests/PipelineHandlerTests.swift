import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing
@testable import Transport

/// The usbredir pipeline's handlers on an EmbeddedChannel: SPICE framing
/// both ways, the common messages, the limits, the raw path, the gate the
/// session's handler follows and the close reasons.
@Suite struct PipelineHandlerTests {
    // MARK: Helpers

    static func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    static func le16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }

    /// A server message with a mini header.
    static func frame(_ type: UInt16, _ body: [UInt8] = []) -> [UInt8] {
        le16(type) + le32(UInt32(body.count)) + body
    }

    /// A server message with a full header.
    static func fullFrame(_ type: UInt16, _ body: [UInt8] = [], serial: UInt64 = 1) -> [UInt8] {
        withUnsafeBytes(of: serial.littleEndian, Array.init) + le16(type) + le32(UInt32(body.count)) + le32(0) + body
    }

    static func ping(id: UInt32 = 5) -> [UInt8] {
        frame(Spice.msgPing, le32(id) + [UInt8](repeating: 9, count: 8) + [UInt8](repeating: 0, count: 50))
    }

    /// A SPICE usbredir pipeline: the handler, the gate and a pass-through
    /// handler as the session's, so what comes out is readable with readInbound.
    static func spiceChannel(miniHeader: Bool = true, lz4: Bool = true,
                             statistics: SpiceStatisticsBox? = nil) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let gate = USBRedirSessionGate(eventLoop: channel.eventLoop, peerCloseReason: .closedByPeer)
        try channel.pipeline.syncOperations.addHandlers([
            SpiceVMCHandler(miniHeader: miniHeader, lz4: lz4, statistics: statistics, logger: testLogger), gate,
        ])
        try USBRedirConnection.addHandler(PassThrough(), to: channel)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5900)).wait()
        return channel
    }

    static func inbound(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var out: [UInt8] = []
        while let b = try channel.readInbound(as: ByteBuffer.self) { out += Array(b.readableBytesView) }
        return out
    }

    /// Every buffer written, each as bytes.
    static func outbound(_ channel: EmbeddedChannel) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        while let b = try channel.readOutbound(as: ByteBuffer.self) { out.append(Array(b.readableBytesView)) }
        return out
    }

    /// The messages in what the client wrote (mini header): type and body.
    static func messages(_ bytes: [UInt8], miniHeader: Bool = true) -> [(type: UInt16, body: [UInt8])] {
        var b = ByteBuffer(bytes: bytes)
        var out: [(UInt16, [UInt8])] = []
        while b.readableBytes > 0 {
            if !miniHeader { b.moveReaderIndex(forwardBy: 8) }
            let type: UInt16 = b.readInteger(endianness: .little)!
            let size: UInt32 = b.readInteger(endianness: .little)!
            if !miniHeader { b.moveReaderIndex(forwardBy: 4) }
            out.append((type, b.readBytes(length: Int(size))!))
        }
        return out
    }

    // MARK: SPICE inbound

    @Test func framesSplitAtEveryByteBoundaryComeOutWhole() throws {
        let stream = Self.frame(Spice.msgVMCData, Array("hello".utf8)) + Self.ping()
            + Self.frame(999, [1, 2, 3]) + Self.frame(Spice.msgVMCData, Array(" world".utf8))
        for cut in 1..<stream.count {
            let channel = try Self.spiceChannel()
            try channel.writeInbound(ByteBuffer(bytes: stream[..<cut]))
            try channel.writeInbound(ByteBuffer(bytes: stream[cut...]))
            #expect(try Self.inbound(channel) == Array("hello world".utf8), "cut at \(cut)")
            let replies = Self.messages(try Self.outbound(channel).flatMap { $0 })
            #expect(replies.map(\.type) == [Spice.msgcPong], "cut at \(cut)")
        }
        // And one byte per read.
        let channel = try Self.spiceChannel()
        for byte in stream { try channel.writeInbound(ByteBuffer(bytes: [byte])) }
        #expect(try Self.inbound(channel) == Array("hello world".utf8))
    }

    @Test func severalFramesInOneReadComeOutInOrder() throws {
        let channel = try Self.spiceChannel()
        let stream = (0..<5).flatMap { Self.frame(Spice.msgVMCData, [UInt8](repeating: UInt8($0), count: 3)) }
        try channel.writeInbound(ByteBuffer(bytes: stream))
        var chunks: [[UInt8]] = []
        while let b = try channel.readInbound(as: ByteBuffer.self) { chunks.append(Array(b.readableBytesView)) }
        #expect(chunks == (0..<5).map { [UInt8](repeating: UInt8($0), count: 3) })
    }

    @Test(arguments: [true, false]) func pingIsAnsweredWithPong(miniHeader: Bool) throws {
        let channel = try Self.spiceChannel(miniHeader: miniHeader)
        let body = Self.le32(77) + [UInt8](repeating: 9, count: 8) + [UInt8](repeating: 0, count: 100)
        let ping = miniHeader ? Self.frame(Spice.msgPing, body) : Self.fullFrame(Spice.msgPing, body)
        try channel.writeInbound(ByteBuffer(bytes: ping + ping))
        #expect(try Self.inbound(channel).isEmpty)
        let written = try Self.outbound(channel).flatMap { $0 }
        let replies = Self.messages(written, miniHeader: miniHeader)
        #expect(replies.map(\.type) == [Spice.msgcPong, Spice.msgcPong])
        #expect(replies.allSatisfy { $0.body == Array(body.prefix(12)) }, "PONG echoes id and timestamp only")
        if !miniHeader {
            // Full headers carry our serial, one more per message.
            #expect(Array(written.prefix(8)) == withUnsafeBytes(of: UInt64(1).littleEndian, Array.init))
            #expect(Array(written[(18 + 12)..<(18 + 12 + 8)]) == withUnsafeBytes(of: UInt64(2).littleEndian, Array.init))
        }
    }

    @Test func setAckWindowProducesOneAckPerWindow() throws {
        let channel = try Self.spiceChannel()
        try channel.writeInbound(ByteBuffer(bytes: Self.frame(Spice.msgSetAck, Self.le32(7) + Self.le32(2))))
        let sync = Self.messages(try Self.outbound(channel).flatMap { $0 })
        #expect(sync.map(\.type) == [Spice.msgcAckSync] && sync.first?.body == Self.le32(7))
        // 5 messages in window 2: two ACKs.
        for i in 0..<5 { try channel.writeInbound(ByteBuffer(bytes: Self.frame(Spice.msgVMCData, [UInt8(i)]))) }
        let acks = Self.messages(try Self.outbound(channel).flatMap { $0 })
        #expect(acks.map(\.type) == [Spice.msgcAck, Spice.msgcAck])
        #expect(try Self.inbound(channel) == [0, 1, 2, 3, 4])
    }

    @Test func repliesAreFlushedAtReadComplete() throws {
        let channel = try Self.spiceChannel()
        channel.pipeline.fireChannelRead(ByteBuffer(bytes: Self.ping()))
        #expect(try Self.outbound(channel).isEmpty, "not flushed before channelReadComplete")
        channel.pipeline.fireChannelReadComplete()
        #expect(Self.messages(try Self.outbound(channel).flatMap { $0 }).map(\.type) == [Spice.msgcPong])
    }

    @Test func compressedDataIsDecoded() throws {
        let stats = SpiceStatisticsBox(SpiceStatistics())
        let channel = try Self.spiceChannel(statistics: stats)
        let data = (0..<3000).map { UInt8($0 % 7) }
        let compressed = try #require(LZ4.compress(ByteBuffer(bytes: data)))
        let body = [Spice.vmcCompressionLZ4] + Self.le32(3000) + Array(compressed.readableBytesView)
        try channel.writeInbound(ByteBuffer(bytes: Self.frame(Spice.msgVMCCompressedData, body)))
        #expect(try Self.inbound(channel) == data)
        #expect(stats.withLockedValue { $0.compressedMessagesIn } == 1)
        #expect(stats.withLockedValue { $0.messagesIn } == 1)
    }

    // MARK: SPICE outbound

    @Test(arguments: [true, false]) func packetsAreFramedAsOneMessageEach(miniHeader: Bool) throws {
        let channel = try Self.spiceChannel(miniHeader: miniHeader)
        let header = ByteBuffer(bytes: [1, 2, 3, 4]), payload = ByteBuffer(bytes: [5, 6])
        try channel.writeOutbound(OutgoingPacket(parts: [header, payload], compressible: false))
        try channel.writeOutbound(OutgoingPacket(parts: [header], compressible: false))
        let written = try Self.outbound(channel)
        // The header goes alone, the parts follow as they are.
        let first = miniHeader ? Self.frame(Spice.msgVMCData, []).prefix(2) + Self.le32(6)
            : withUnsafeBytes(of: UInt64(1).littleEndian, Array.init) + Self.le16(Spice.msgVMCData) + Self.le32(6) + Self.le32(0)
        let second = miniHeader ? Self.le16(Spice.msgVMCData) + Self.le32(4)
            : withUnsafeBytes(of: UInt64(2).littleEndian, Array.init) + Self.le16(Spice.msgVMCData) + Self.le32(4) + Self.le32(0)
        #expect(written == [Array(first), [1, 2, 3, 4], [5, 6], second, [1, 2, 3, 4]])
    }

    @Test func packetsAreCompressedWhenItPays() throws {
        let stats = SpiceStatisticsBox(SpiceStatistics())
        let channel = try Self.spiceChannel(statistics: stats)
        let data = (0..<3000).map { UInt8($0 % 7) }
        try channel.writeOutbound(OutgoingPacket(parts: [ByteBuffer(bytes: data.prefix(16)), ByteBuffer(bytes: data.dropFirst(16))],
                                                 compressible: true))
        let written = try Self.outbound(channel)
        #expect(written.count == 1)
        let message = try #require(Self.messages(written.flatMap { $0 }).first)
        #expect(message.type == Spice.msgVMCCompressedData)
        #expect(message.body.count < 3000)
        var body = ByteBuffer(bytes: message.body)
        let decoded = try SpiceWire.compressedData(body)
        #expect(Array(decoded.readableBytesView) == data)
        body.moveReaderIndex(forwardBy: 1)
        #expect(body.readInteger(endianness: .little, as: UInt32.self) == 3000)
        #expect(stats.withLockedValue { ($0.compressedMessagesOut, $0.messagesOut, $0.compressionAttempts) } == (1, 1, 1))
    }

    @Test func packetsStayUncompressedWhenItDoesNotPayOrIsNotAllowed() throws {
        let text = ByteBuffer(bytes: (0..<3000).map { UInt8($0 % 7) })
        var g = SystemRandomNumberGenerator()
        let noise = ByteBuffer(bytes: (0..<3000).map { _ in UInt8.random(in: 0...255, using: &g) })
        let small = ByteBuffer(bytes: [UInt8](repeating: 0, count: Spice.compressionThreshold))
        for (lz4, packet) in [(true, OutgoingPacket(parts: [text], compressible: false)),   // not allowed (isochronous)
                              (false, OutgoingPacket(parts: [text], compressible: true)),   // server without LZ4
                              (true, OutgoingPacket(parts: [noise], compressible: true)),   // does not shrink
                              (true, OutgoingPacket(parts: [small], compressible: true))] { // below the threshold
            let channel = try Self.spiceChannel(lz4: lz4)
            try channel.writeOutbound(packet)
            let types = Self.messages(try Self.outbound(channel).flatMap { $0 }).map(\.type)
            #expect(types == [Spice.msgVMCData], "lz4 \(lz4), \(packet.parts[0].readableBytes) bytes")
        }
    }

    // MARK: Limits

    @Test(arguments: [true, false]) func oversizedHeaderFailsTheChannel(miniHeader: Bool) throws {
        let channel = try Self.spiceChannel(miniHeader: miniHeader)
        let closeReason = try channel.pipeline.syncOperations.handler(type: USBRedirSessionGate.self).closeReason
        let size = UInt32(Spice.maxMessageSize) + 1
        let header = miniHeader ? Self.le16(Spice.msgVMCData) + Self.le32(size)
            : [UInt8](repeating: 0, count: 8) + Self.le16(Spice.msgVMCData) + Self.le32(size) + Self.le32(0)
        #expect {
            try channel.writeInbound(ByteBuffer(bytes: header))
        } throws: { error in
            guard case TransportError.protocolViolation(let why) = error else { return false }
            return why.contains("exceeds the limit")
        }
        #expect(!channel.isActive)
        let reason = try closeReason.wait()
        guard case .protocolViolation = reason else {
            Issue.record("close reason \(reason)")
            return
        }
        // Nothing more is read after the failure.
        _ = try? channel.writeInbound(ByteBuffer(bytes: Self.frame(Spice.msgVMCData, [1])))
        #expect(try Self.inbound(channel).isEmpty)
    }

    @Test func badLZ4BodyFailsTheChannel() throws {
        for body: [UInt8] in [[Spice.vmcCompressionLZ4] + Self.le32(3000) + [0xff, 0xff, 0xff, 0xff],   // garbage
                              [Spice.vmcCompressionLZ4] + Self.le32(UInt32(Spice.maxMessageSize) + 1) + [0],  // too large
                              [7] + Self.le32(10) + [0],                                               // unknown kind
                              [Spice.vmcCompressionLZ4, 0]] {                                           // short
            let channel = try Self.spiceChannel()
            #expect(throws: TransportError.self) {
                try channel.writeInbound(ByteBuffer(bytes: Self.frame(Spice.msgVMCCompressedData, body)))
            }
            #expect(!channel.isActive)
            #expect(try Self.inbound(channel).isEmpty)
        }
    }

    @Test func shortCommonMessageFailsTheChannel() throws {
        let channel = try Self.spiceChannel()
        #expect(throws: TransportError.protocolViolation("short PING")) {
            try channel.writeInbound(ByteBuffer(bytes: Self.frame(Spice.msgPing, [1, 2, 3])))
        }
        #expect(!channel.isActive)
    }

    // MARK: Raw

    static func rawChannel() throws -> (EmbeddedChannel, USBRedirConnection, ReadCounter) {
        let channel = EmbeddedChannel()
        let reads = ReadCounter()
        try channel.pipeline.syncOperations.addHandler(reads)
        let connection = try RawUSBRedir.makeConnection(channel, peer: "test")
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4000)).wait()
        return (channel, connection, reads)
    }

    @Test func rawPassesBytesAndPacketsThrough() throws {
        let (channel, connection, _) = try Self.rawChannel()
        try connection.addHandler(PassThrough())
        try channel.writeInbound(ByteBuffer(bytes: [1, 2, 3]))
        try channel.writeInbound(ByteBuffer(bytes: [4]))
        #expect(try Self.inbound(channel) == [1, 2, 3, 4])
        try channel.writeOutbound(OutgoingPacket(parts: [ByteBuffer(bytes: [9, 8]), ByteBuffer(bytes: [7])], compressible: true))
        #expect(try Self.outbound(channel) == [[9, 8], [7]])
    }

    // MARK: The gate and backpressure

    @Test func whatArrivesBeforeTheSessionsHandlerIsHeldThenDeliveredInOrder() throws {
        let (channel, connection, reads) = try Self.rawChannel()
        let before = reads.count
        try channel.writeInbound(ByteBuffer(bytes: [1, 2]))
        channel.read()
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil, "held until the session's handler is there")
        #expect(reads.count == before, "the read request is held too")
        let session = Recorder()
        try connection.addHandler(session)
        #expect(session.events == ["read [1, 2]", "readComplete"])
        #expect(reads.count == before + 1, "the held read is asked for again, through the session's handler")
        try channel.writeInbound(ByteBuffer(bytes: [3]))
        #expect(session.events.suffix(2) == ["read [3]", "readComplete"])
    }

    @Test func theTransportPassesReadsOnSoTheSessionCanHoldThem() throws {
        for spice in [false, true] {
            let channel = EmbeddedChannel()
            let reads = ReadCounter()
            try channel.pipeline.syncOperations.addHandler(reads)
            if spice {
                let gate = USBRedirSessionGate(eventLoop: channel.eventLoop, peerCloseReason: .closedByPeer)
                try channel.pipeline.syncOperations.addHandlers([
                    SpiceVMCHandler(miniHeader: true, lz4: false, statistics: nil, logger: testLogger), gate,
                ])
            } else {
                _ = try RawUSBRedir.makeConnection(channel, peer: "test")
            }
            let session = Recorder()
            try USBRedirConnection.addHandler(session, to: channel)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4000)).wait()
            let before = reads.count
            channel.read()
            #expect(reads.count == before + 1, "spice \(spice): a read passes")
            session.holdReads = true
            channel.read()
            #expect(reads.count == before + 1, "spice \(spice): a read the session holds does not reach the socket")
        }
    }

    @Test func endsBeforeTheSessionsHandlerAreReplayedToIt() throws {
        let (channel, connection, _) = try Self.rawChannel()
        try channel.writeInbound(ByteBuffer(bytes: [1]))
        channel.pipeline.fireChannelInactive()
        let session = Recorder()
        try connection.addHandler(session)
        #expect(session.events == ["read [1]", "readComplete", "inactive"])
    }

    // MARK: Close reasons

    @Test func closeReasons() throws {
        let (byPeer, peerConnection, _) = try Self.rawChannel()
        try peerConnection.addHandler(PassThrough())
        byPeer.pipeline.fireChannelInactive()
        #expect(try peerConnection.closeReason.wait() == .closedByPeer)

        let (local, localConnection, _) = try Self.rawChannel()
        try localConnection.addHandler(PassThrough())
        try local.close().wait()
        #expect(try localConnection.closeReason.wait() == .closedLocally)

        let (failed, failedConnection, _) = try Self.rawChannel()
        try failedConnection.addHandler(PassThrough())
        failed.pipeline.fireErrorCaught(TransportError.tls("test"))
        _ = try? failed.throwIfErrorCaught()
        try failed.close().wait()
        #expect(try failedConnection.closeReason.wait() == .tls("test"), "the first error wins over the local close")
    }

    // MARK: The link

    /// A server's link reply with `pubkey`, the link result, then `after`,
    /// all in one read: the channel links, and `after` reaches the session.
    @Test func theLinkHandsTheBytesAfterItToTheUSBRedirPipeline() throws {
        let pubkey = try FakeSpiceServerTests.publicKeyDER()
        let channel = EmbeddedChannel()
        let linked = channel.eventLoop.makePromise(of: SpiceLink.Result.self)
        let link = SpiceLink(connectionID: 1, channelType: .usbredir, channelID: 0, channelCaps: [1], password: "")
        let gate = USBRedirSessionGate(eventLoop: channel.eventLoop, peerCloseReason: .closedByPeer)
        try channel.pipeline.syncOperations.addHandler(SpiceLinkHandler(link: link, linked: linked) { context, result in
            try context.pipeline.syncOperations.addHandlers([
                SpiceVMCHandler(miniHeader: result.miniHeader, lz4: false, statistics: nil, logger: testLogger), gate,
            ], position: .after(context.handler))
        })
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5900)).wait()
        let sent = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(sent.getInteger(at: 0, endianness: .little, as: UInt32.self) == Spice.magic)
        let body = Self.le32(0) + pubkey + Self.le32(1) + Self.le32(1) + Self.le32(4 + 162 + 12) + Self.le32(0b1011) + Self.le32(1)
        let reply = Self.le32(Spice.magic) + Self.le32(2) + Self.le32(2) + Self.le32(UInt32(body.count)) + body
        try channel.writeInbound(ByteBuffer(bytes: reply))
        let ticket = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(ticket.readableBytes == 4 + Spice.encryptedTicketBytes)
        try channel.writeInbound(ByteBuffer(bytes: Self.le32(0) + Self.frame(Spice.msgVMCData, [42, 43])))
        let result = try linked.futureResult.wait()
        #expect(result.miniHeader && result.serverHasChannelCap(Spice.spicevmcCapLZ4))
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: SpiceLinkHandler.self) }
        try USBRedirConnection.addHandler(PassThrough(), to: channel)
        #expect(try Self.inbound(channel) == [42, 43])
    }

    /// The handlers after the link cannot be added: the link fails (it
    /// must not be left pending) and the channel closes.
    @Test func aLinkWhoseHandlersCannotBeAddedFails() throws {
        let pubkey = try FakeSpiceServerTests.publicKeyDER()
        let channel = EmbeddedChannel()
        let linked = channel.eventLoop.makePromise(of: SpiceLink.Result.self)
        let link = SpiceLink(connectionID: 1, channelType: .usbredir, channelID: 0, channelCaps: [1], password: "")
        try channel.pipeline.syncOperations.addHandler(SpiceLinkHandler(link: link, linked: linked) { _, _ in
            throw TransportError.configuration("no room")
        })
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5900)).wait()
        let body = Self.le32(0) + pubkey + Self.le32(1) + Self.le32(0) + Self.le32(4 + 162 + 12) + Self.le32(0b1011)
        let reply = Self.le32(Spice.magic) + Self.le32(2) + Self.le32(2) + Self.le32(UInt32(body.count)) + body
        try channel.writeInbound(ByteBuffer(bytes: reply + Self.le32(0)))
        #expect(throws: TransportError.configuration("no room")) { try linked.futureResult.wait() }
        #expect(!channel.isActive)
    }

    @Test func aLinkErrorFailsTheLinkAndClosesTheChannel() throws {
        let channel = EmbeddedChannel()
        let linked = channel.eventLoop.makePromise(of: SpiceLink.Result.self)
        let link = SpiceLink(connectionID: 1, channelType: .usbredir, channelID: 0, channelCaps: [1], password: "")
        try channel.pipeline.syncOperations.addHandler(SpiceLinkHandler(link: link, linked: linked) { _, _ in
            Issue.record("installed after a failed link")
        })
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5900)).wait()
        // A link header with bad magic.
        try channel.writeInbound(ByteBuffer(bytes: Self.le32(0x1234) + Self.le32(2) + Self.le32(2) + Self.le32(200)))
        #expect {
            try linked.futureResult.wait()
        } throws: { error in
            if case TransportError.notSpice = error { return true } else { return false }
        }
        #expect(!channel.isActive)
    }
}

/// Passes everything on (a session's handler that does nothing).
final class PassThrough: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = OutgoingPacket
}

/// Counts the read requests that reach the socket's end of the pipeline.
final class ReadCounter: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = Any
    private(set) var count = 0
    func read(context: ChannelHandlerContext) {
        count += 1
        context.read()
    }
}

/// A session's handler that records what it gets and may hold reads.
final class Recorder: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = OutgoingPacket
    var events: [String] = []
    var holdReads = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        events.append("read \(Array(unwrapInboundIn(data).readableBytesView))")
    }
    func channelReadComplete(context: ChannelHandlerContext) { events.append("readComplete") }
    func channelInactive(context: ChannelHandlerContext) { events.append("inactive") }
    func errorCaught(context: ChannelHandlerContext, error: Error) { events.append("error \(error)") }
    func read(context: ChannelHandlerContext) {
        if !holdReads { context.read() }
    }
}
