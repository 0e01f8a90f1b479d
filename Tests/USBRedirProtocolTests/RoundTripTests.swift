import NIOCore
import Testing
@testable import USBRedirProtocol

/// Our serializer then our parser: random valid messages of every type, both
/// roles, random capability sets, fed whole, in random chunks and byte by byte.
@Suite("Round trip: serializer -> parser")
struct RoundTripTests {
    struct Conversation {
        var sender: USBRedirRole
        var senderCaps: USBRedirCapabilities
        var receiverCaps: USBRedirCapabilities
        var packets: [USBRedirPacket]
        var bytes: [UInt8]
    }

    /// A hello from each side, then every type the sender may send (shuffled)
    /// plus a few random extra packets.
    static func conversation(sender: USBRedirRole, _ rng: inout SplitMix64) throws -> Conversation {
        let senderCaps = MessageGenerator.capabilities(&rng)
        let receiverCaps = rng.oneIn(4) ? senderCaps : MessageGenerator.capabilities(&rng)
        let negotiation = USBRedirNegotiation(role: sender, ours: senderCaps, peer: receiverCaps)
        var packets = [USBRedirPacket(id: rng.bool() ? 0 : UInt64(rng.u32()),
                                      .hello(.init(version: MessageGenerator.version(&rng), capabilities: senderCaps)))]
        var types = MessageGenerator.sendableTypes(sender: sender, negotiation)
        types += (0..<rng.int(0...6)).map { _ in rng.pick(types) }
        types.shuffle(using: &rng)
        for type in types {
            packets.append(USBRedirPacket(id: MessageGenerator.id(negotiation, &rng),
                                          MessageGenerator.message(type, sender: sender, negotiation, &rng)))
        }
        let bytes = try ByteBuffer.usbRedirStream(packets, negotiation).allBytes
        return Conversation(sender: sender, senderCaps: senderCaps, receiverCaps: receiverCaps,
                            packets: packets, bytes: bytes)
    }

    @Test("whole, random chunks, byte by byte", arguments: [USBRedirRole.host, .guest])
    func roundTrip(sender: USBRedirRole) throws {
        let seed = TestSeed.derive("round trip \(sender)")
        var rng = SplitMix64(seed: seed)
        var typesSeen = Set<USBRedirMessageType>()
        for i in 0..<400 {
            let conv = try Self.conversation(sender: sender, &rng)
            let context = Comment(rawValue: "seed \(seed) case \(i) caps \(conv.senderCaps.rawValue)/\(conv.receiverCaps.rawValue)")
            let chunkings: [[Int]] = [
                [],                                            // all at once
                (0..<32).map { _ in rng.int(1...97) },         // random small chunks
                (0..<8).map { _ in rng.int(1...5000) },        // random large chunks
                [1],                                           // one byte at a time
            ]
            for chunks in chunkings where chunks != [1] || i % 5 == 0 {
                var parser = USBRedirParser(role: sender.peer, capabilities: conv.receiverCaps)
                let parsed = try parser.parseAll(conv.bytes, chunks: chunks)
                #expect(parsed == conv.packets, "\(context) chunks \(chunks.prefix(4))")
                #expect(parser.bufferedByteCount == 0, context)
                #expect(parser.negotiation.peer == conv.senderCaps, context)
            }
            typesSeen.formUnion(conv.packets.map(\.message.type))
        }
        // Every type this role sends, and hello, came by.
        let expected = Set(USBRedirMessageType.allCases.filter { USBRedirMessageLayout.of($0).canBeSent(by: sender) })
        #expect(typesSeen == expected)
    }

    @Test("capability-dependent fields read back as 0 when the capability is not active")
    func inactiveFields() throws {
        let hostCaps = USBRedirCapabilities.all
        let guestCaps = InteropConfig.reduced
        let n = USBRedirNegotiation(role: .host, ours: hostCaps, peer: guestCaps)
        let connect = USBRedirMessage.DeviceConnect(speed: 2, deviceClass: 9, deviceSubclass: 0, deviceProtocol: 1,
                                                    vendorID: 0x1d6b, productID: 2, deviceVersionBCD: 0x0510)
        let info = USBRedirMessage.EPInfo(type: [0, 2], interval: [0, 1], interface: [0, 0],
                                          maxPacketSize: [64, 512], maxStreams: [0, 16])
        let bytes = try ByteBuffer.usbRedirStream([
            .init(.hello(.init(version: "h", capabilities: hostCaps))),
            .init(.deviceConnect(connect)), .init(.epInfo(info)),
        ], n)
        // hello (32-bit id), then 64-bit ids, an 8-byte device_connect and a 96-byte ep_info.
        #expect(bytes.readableBytes == (12 + 64 + 4) + (16 + 8) + (16 + 96))
        var parser = USBRedirParser(role: .guest, capabilities: guestCaps)
        let parsed = try parser.parseAll(bytes.allBytes, chunks: []).map(\.message)
        var expectedConnect = connect
        expectedConnect.deviceVersionBCD = 0
        let expectedInfo = USBRedirMessage.EPInfo(type: [0, 2], interval: [0, 1], interface: [0, 0],
                                                  maxPacketSize: [], maxStreams: [])
        #expect(parsed.dropFirst() == [.deviceConnect(expectedConnect), .epInfo(expectedInfo)])
    }

    @Test("header sizes follow the negotiated capabilities", arguments: [
        (USBRedirCapabilities.all, 16, 10, 288, 10),
        (InteropConfig.full32, 12, 10, 288, 10),
        (InteropConfig.reduced, 16, 8, 96, 8),
        (InteropConfig.without(.all, [.bulkStreams]), 16, 10, 160, 10),
        (InteropConfig.streamsWithoutMPS, 16, 10, 96, 10),
    ])
    func headerSizes(caps: USBRedirCapabilities, header: Int, connect: Int, epInfo: Int, bulk: Int) throws {
        let n = USBRedirNegotiation(role: .host, ours: caps, peer: caps)
        func size(_ m: USBRedirMessage) throws -> Int {
            try ByteBuffer.usbRedirStream([.init(m)], n).readableBytes
        }
        let c = USBRedirMessage.DeviceConnect(speed: 0, deviceClass: 0, deviceSubclass: 0, deviceProtocol: 0,
                                              vendorID: 0, productID: 0, deviceVersionBCD: 0)
        #expect(try size(.hello(.init(version: "", capabilities: caps))) == 12 + 64 + 4)
        #expect(try size(.deviceConnect(c)) == header + connect)
        #expect(try size(.epInfo(.init(type: [], interval: [], interface: [], maxPacketSize: [], maxStreams: []))) == header + epInfo)
        #expect(try size(.bulkPacket(.init(endpoint: 0x81, status: 0, length: 0, streamID: 0))) == header + bulk)
    }
}
