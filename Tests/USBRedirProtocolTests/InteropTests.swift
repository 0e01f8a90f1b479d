import CUSBRedirParser
import NIOCore
import Testing
@testable import USBRedirProtocol

/// One side of a conversation with libusbredirparser: which role our code
/// plays and which capabilities each side announces.
struct InteropConfig: Sendable, CustomTestStringConvertible {
    var name: String
    var ourRole: USBRedirRole
    var ourCaps: USBRedirCapabilities
    var cCaps: USBRedirCapabilities

    var testDescription: String { "us=\(ourRole) \(name)" }

    static let full = USBRedirCapabilities.all
    static let full32 = without(.all, [.ids64Bit])
    /// The shorter header variants: no device_version_bcd, 96-byte ep_info, 16-bit bulk length.
    static let reduced = without(.all, [.connectDeviceVersion, .epInfoMaxPacketSize, .bulkStreams, .bulkLength32Bit])
    static let reduced32 = without(reduced, [.ids64Bit])
    /// bulk_streams without ep_info_max_packet_size: the C library drops bulk_streams.
    static let streamsWithoutMPS = without(.all, [.epInfoMaxPacketSize])

    static func without(_ caps: USBRedirCapabilities, _ drop: [USBRedirCapability]) -> USBRedirCapabilities {
        var c = caps
        drop.forEach { c.remove($0) }
        return c
    }

    static let all: [InteropConfig] = [USBRedirRole.host, .guest].flatMap { role in
        [
            InteropConfig(name: "all caps, 64-bit ids", ourRole: role, ourCaps: full, cCaps: full),
            InteropConfig(name: "all caps but 64bits_ids, 32-bit ids", ourRole: role, ourCaps: full32, cCaps: full32),
            InteropConfig(name: "reduced caps, 64-bit ids", ourRole: role, ourCaps: reduced, cCaps: reduced),
            InteropConfig(name: "reduced caps, 32-bit ids", ourRole: role, ourCaps: reduced32, cCaps: reduced32),
            InteropConfig(name: "bulk_streams without ep_info_max_packet_size", ourRole: role,
                          ourCaps: streamsWithoutMPS, cCaps: streamsWithoutMPS),
            InteropConfig(name: "asymmetric: us all, C reduced 32-bit", ourRole: role, ourCaps: full, cCaps: reduced32),
            InteropConfig(name: "asymmetric: us reduced, C all", ourRole: role, ourCaps: reduced, cCaps: full),
            InteropConfig(name: "asymmetric: us bulk_streams without ep_info_max_packet_size, C all", ourRole: role,
                          ourCaps: streamsWithoutMPS, cCaps: full),
        ]
    }

    /// What the C library announces in its hello: as the guest it always adds
    /// device_disconnect_ack (it sends the ack itself); bulk_streams without
    /// ep_info_max_packet_size is dropped (usbredirparser_verify_caps).
    var cHelloCaps: USBRedirCapabilities {
        var c = cCaps
        if ourRole.peer == .guest { c.insert(.deviceDisconnectAck) }
        return Self.verified(c)
    }

    static func verified(_ caps: USBRedirCapabilities) -> USBRedirCapabilities {
        var c = caps
        if c.contains(.bulkStreams) && !c.contains(.epInfoMaxPacketSize) { c.remove(.bulkStreams) }
        return c
    }

    var expects64BitIDs: Bool { ourCaps.contains(.ids64Bit) && cCaps.contains(.ids64Bit) }
}

/// Messages of each type per configuration and direction.
private let roundsPerType = 12

@Suite("Interop with libusbredirparser 0.13")
struct InteropTests {
    // MARK: a. our serializer -> C parser

    @Test("our serializer -> C parser", arguments: InteropConfig.all)
    func ourSerializerToCParser(_ config: InteropConfig) throws {
        let seed = TestSeed.derive("ours->C \(config.testDescription)")
        var rng = SplitMix64(seed: seed)
        let c = CParser(role: config.ourRole.peer, capabilities: config.cCaps)
        var ours = USBRedirParser(role: config.ourRole, capabilities: config.ourCaps)

        // The library's hello reaches us first (it queues it in usbredirparser_init).
        ours.append(c.takeOutput())
        let cHello = try #require(try ours.nextPacket(), "no hello from the C library")
        #expect(cHello == USBRedirPacket(id: 0, .hello(.init(version: c.version, capabilities: config.cHelloCaps))))
        #expect(ours.bufferedByteCount == 0)

        // Ours goes to the library, which must report it and switch id widths.
        let ourHello = USBRedirMessage.Hello(version: MessageGenerator.version(&rng), capabilities: config.ourCaps)
        let helloBytes = try ByteBuffer.usbRedirStream([.init(id: 0, .hello(ourHello))], ours.negotiation)
        #expect(c.feed(helloBytes.allBytes) == 0)
        #expect(c.takeEvents() == [CParser.Event(id: nil, message: .hello(.init(
            version: ourHello.version, capabilities: InteropConfig.verified(config.ourCaps))))])
        #expect(c.hasPeerCaps)
        #expect(c.isActive(.ids64Bit) == config.expects64BitIDs)
        #expect(ours.negotiation.isActive(.ids64Bit) == config.expects64BitIDs)
        for cap in USBRedirCapability.allCases {
            #expect(c.isActive(cap) == ours.negotiation.isActive(cap), "capability \(cap) active on one side only")
        }

        let negotiation = ours.negotiation
        let types = MessageGenerator.sendableTypes(sender: config.ourRole, negotiation)
        #expect(Set(types) == Self.expectedTypes(sender: config.ourRole, negotiation))
        var disconnects = 0
        for round in 0..<roundsPerType {
            for type in types {
                let packet = USBRedirPacket(id: MessageGenerator.id(negotiation, &rng),
                                            MessageGenerator.message(type, sender: config.ourRole, negotiation, &rng))
                let bytes = try ByteBuffer.usbRedirStream([packet], negotiation)
                let r = c.feed(bytes.allBytes)
                let context = Comment(rawValue: "seed \(seed) round \(round) \(type) id \(packet.id)")
                #expect(r == 0, context)
                #expect(c.unreadByteCount == 0, context)
                #expect(c.takeProblems() == [], context)
                #expect(c.takeEvents() == [Self.expectedEvent(packet)], context)
                if type == .deviceDisconnect { disconnects += 1 }
            }
        }
        // As the guest, the library acknowledges each device_disconnect itself.
        let replies = try ours.parseAll(c.takeOutput(), chunks: [])
        let expectedAcks = config.ourRole == .host && negotiation.isActive(.deviceDisconnectAck) ? disconnects : 0
        #expect(replies == Array(repeating: USBRedirPacket(id: 0, .deviceDisconnectAck), count: expectedAcks))
    }

    /// The C callback gets no id for these types.
    static func expectedEvent(_ packet: USBRedirPacket) -> CParser.Event {
        switch packet.message {
        case .hello, .deviceConnect, .deviceDisconnect, .reset, .interfaceInfo, .epInfo, .filterReject,
             .filterFilter, .deviceDisconnectAck:
            return .init(id: nil, message: packet.message)
        default:
            return .init(id: packet.id, message: packet.message)
        }
    }

    /// The spec's list, independent of the layout table: what each role sends.
    static func expectedTypes(sender: USBRedirRole, _ n: USBRedirNegotiation) -> Set<USBRedirMessageType> {
        var hostOnly: Set<USBRedirMessageType> = [
            .deviceConnect, .deviceDisconnect, .interfaceInfo, .epInfo, .configurationStatus, .altSettingStatus,
            .isoStreamStatus, .interruptReceivingStatus, .bulkStreamsStatus,
        ]
        var guestOnly: Set<USBRedirMessageType> = [
            .reset, .setConfiguration, .getConfiguration, .setAltSetting, .getAltSetting, .startIsoStream,
            .stopIsoStream, .startInterruptReceiving, .stopInterruptReceiving, .allocBulkStreams,
            .freeBulkStreams, .cancelDataPacket,
        ]
        var both: Set<USBRedirMessageType> = [.controlPacket, .bulkPacket, .isoPacket, .interruptPacket]
        if n.isActive(.filter) {
            guestOnly.insert(.filterReject)
            both.insert(.filterFilter)
        }
        if n.isActive(.deviceDisconnectAck) { guestOnly.insert(.deviceDisconnectAck) }
        if n.isActive(.bulkReceiving) {
            guestOnly.formUnion([.startBulkReceiving, .stopBulkReceiving])
            hostOnly.formUnion([.bulkReceivingStatus, .bufferedBulkPacket])
        }
        return both.union(sender == .host ? hostOnly : guestOnly)
    }

    // MARK: b. C serializer -> our parser

    @Test("C serializer -> our parser", arguments: InteropConfig.all)
    func cSerializerToOurParser(_ config: InteropConfig) throws {
        let seed = TestSeed.derive("C->ours \(config.testDescription)")
        var rng = SplitMix64(seed: seed)
        let cRole = config.ourRole.peer
        let c = CParser(role: cRole, capabilities: config.cCaps,
                        version: "oracle " + MessageGenerator.version(&rng))
        var ours = USBRedirParser(role: config.ourRole, capabilities: config.ourCaps)
        var stream: [UInt8] = []      // everything the library wrote, for the chunked replays
        var expected: [USBRedirPacket] = []

        // Our hello first, so the library knows our caps before it sends anything else.
        let ourHello = USBRedirPacket(id: 0, .hello(.init(version: "swift", capabilities: config.ourCaps)))
        c.feed(try ByteBuffer.usbRedirStream([ourHello], ours.negotiation).allBytes)
        #expect(c.takeProblems() == [])
        #expect(c.takeEvents().map(\.message) == [.hello(.init(version: "swift",
                                                                capabilities: InteropConfig.verified(config.ourCaps)))])

        let helloBytes = c.takeOutput()
        stream += helloBytes
        let hello = USBRedirPacket(id: 0, .hello(.init(version: String(c.version.utf8.prefix(63))!,
                                                       capabilities: config.cHelloCaps)))
        expected.append(hello)
        #expect(try ours.parseAll(helloBytes, chunks: []) == [hello])
        #expect(ours.negotiation.isActive(.ids64Bit) == config.expects64BitIDs)
        for cap in USBRedirCapability.allCases {
            #expect(c.isActive(cap) == ours.negotiation.isActive(cap), "capability \(cap) active on one side only")
        }

        let negotiation = ours.negotiation
        let types = MessageGenerator.sendableTypes(sender: cRole, negotiation)
        #expect(Set(types) == Self.expectedTypes(sender: cRole, negotiation))
        for round in 0..<roundsPerType {
            for type in types {
                var packet = USBRedirPacket(id: MessageGenerator.id(negotiation, &rng),
                                            MessageGenerator.message(type, sender: cRole, negotiation, &rng))
                let context = Comment(rawValue: "seed \(seed) round \(round) \(type) id \(packet.id)")
                if case .deviceDisconnectAck = packet.message {
                    // No send call: the library sends it as the guest's reply to device_disconnect.
                    c.feed(try ByteBuffer.usbRedirStream([.init(id: 0, .deviceDisconnect)], negotiation).allBytes)
                    #expect(c.takeEvents() == [.init(id: nil, message: .deviceDisconnect)], context)
                    packet.id = 0
                } else {
                    #expect(c.send(packet), context)
                    if Self.expectedEvent(packet).id == nil { packet.id = 0 }   // those C calls take no id
                }
                let bytes = c.takeOutput()
                #expect(c.takeProblems() == [], context)
                stream += bytes
                expected.append(packet)
                #expect(try ours.parseAll(bytes, chunks: []) == [packet], context)
                #expect(ours.bufferedByteCount == 0, context)
            }
        }

        // The same stream again, one byte at a time and in random chunks.
        var byByte = USBRedirParser(role: config.ourRole, capabilities: config.ourCaps)
        #expect(try byByte.parseAll(stream, chunks: [1]) == expected, "seed \(seed) one byte at a time")
        let chunks = (0..<64).map { _ in rng.int(1...700) }
        var chunked = USBRedirParser(role: config.ourRole, capabilities: config.ourCaps)
        #expect(try chunked.parseAll(stream, chunks: chunks) == expected, "seed \(seed) random chunks")
    }
}

/// Differential test of the validation rules: raw packets with random
/// type-specific headers (and data that sometimes matches them) go to the C
/// parser and to ours; both must accept or both reject, and when both accept
/// the C callback must see what we parsed.
@Suite("Validation parity with libusbredirparser 0.13")
struct ValidationParityTests {
    struct Config: Sendable, CustomTestStringConvertible {
        var receiver: USBRedirRole
        var caps: USBRedirCapabilities
        var name: String
        var testDescription: String { "receiver=\(receiver) \(name)" }
    }

    static let configs: [Config] = [USBRedirRole.host, .guest].flatMap { role in
        [
            Config(receiver: role, caps: InteropConfig.full, name: "all caps"),
            Config(receiver: role, caps: InteropConfig.full32, name: "32-bit ids"),
            Config(receiver: role, caps: InteropConfig.reduced32, name: "reduced caps, 32-bit ids"),
            Config(receiver: role, caps: USBRedirCapabilities([.ids64Bit]), name: "64-bit ids only"),
            Config(receiver: role, caps: .none, name: "no caps"),
        ]
    }

    /// Our documented limit (USBRedirLimits.maxDataLength, 16 MiB) is lower than
    /// the library's MAX_BULK_TRANSFER_SIZE (128 MiB): lengths between the two
    /// are accepted by C and refused by us, on purpose.
    static func inLimitGap(_ value: UInt64) -> Bool {
        value > UInt64(USBRedirLimits.maxDataLength) && value <= 128 * 1024 * 1024
    }

    @Test("random headers: same verdict and fields", arguments: configs)
    func randomHeaders(_ config: Config) throws {
        let seed = TestSeed.derive("parity \(config.testDescription)")
        var rng = SplitMix64(seed: seed)
        let sender = config.receiver.peer
        var verdicts: [String: Int] = [:]
        for i in 0..<1500 {
            let c = CParser(role: config.receiver, capabilities: config.caps)
            var ours = USBRedirParser(role: config.receiver, capabilities: config.caps)
            let senderNegotiation = USBRedirNegotiation(role: sender, ours: config.caps, peer: c.ourCapabilities)
            c.feed(try ByteBuffer.usbRedirStream([.init(.hello(.init(version: "x", capabilities: config.caps)))],
                                                 senderNegotiation).allBytes)
            _ = c.takeEvents()
            _ = try ours.parseAll(c.takeOutput(), chunks: [])

            let type = rng.oneIn(10) ? rng.pick(Array(USBRedirMessageType.allCases.dropFirst()))
                : rng.pick(MessageGenerator.sendableTypes(sender: sender, ours.negotiation))
            var (bytes, gap) = Self.rawPacket(type, ours.negotiation, &rng)
            let context = Comment(rawValue: "seed \(seed) case \(i) \(type) bytes \(bytes)")

            let r = c.feed(bytes)
            let cAccepted = r == 0
            var ourPackets: [USBRedirPacket] = []
            var ourError: USBRedirProtocolError?
            do { ourPackets = try ours.parseAll(bytes, chunks: []) } catch { ourError = error }
            let ourAccepted = ourError == nil
            if ourAccepted { #expect(ourPackets.count == 1, context) }
            bytes.removeAll()

            if gap {
                // Refused by us; if the library took it, only our lower limit may be why.
                #expect(!ourAccepted, context)
                if cAccepted {
                    if case .dataTooLong = ourError {} else {
                        Issue.record("expected dataTooLong, got \(String(describing: ourError)); \(context)")
                    }
                }
                verdicts[cAccepted ? "limit gap" : "rejected", default: 0] += 1
                continue
            }
            #expect(cAccepted == ourAccepted, "C: \(r) \(c.takeProblems()), ours: \(String(describing: ourError)); \(context)")
            verdicts[ourAccepted ? "accepted" : "rejected", default: 0] += 1
            guard cAccepted && ourAccepted, let packet = ourPackets.first else { continue }
            let events = c.takeEvents()
            if case .filterFilter(let f) = packet.message {
                // The library hands over parsed rules, or nothing for an unparsable string.
                let parsed = try? USBRedirFilter.parse(f.rules)
                #expect(events == (parsed.map { [.init(id: nil, message: .filterFilter(.init(rules: USBRedirFilter.format($0))))] } ?? []), context)
            } else {
                #expect(events == [InteropTests.expectedEvent(packet)], context)
            }
        }
        // Both outcomes must be common, or the test proves little.
        #expect(verdicts["accepted", default: 0] > 300, "\(verdicts)")
        #expect(verdicts["rejected", default: 0] > 300, "\(verdicts)")
    }

    /// A packet with a random type header of the right size. Returns whether its
    /// transfer length falls in the documented limit gap.
    static func rawPacket(_ type: USBRedirMessageType, _ n: USBRedirNegotiation,
                          _ rng: inout SplitMix64) -> ([UInt8], gap: Bool) {
        let headerLength = USBRedirMessageLayout.of(type).headerLength(of: type, n)
        var h = rng.bytes(headerLength)
        func put<T: FixedWidthInteger>(_ v: T, at offset: Int) {
            withUnsafeBytes(of: v.littleEndian) { for (i, b) in $0.enumerated() { h[offset + i] = b } }
        }
        func get<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
            h[offset..<offset + MemoryLayout<T>.size].reversed().reduce(0) { $0 << 8 | T($1) }
        }
        let small = rng.int(0..<4) != 0
        let smallLength = rng.int(0...64)
        var declared: Int?   // the transfer length the header declares
        var gapValue: UInt64 = 0
        switch type {
        case .interfaceInfo where rng.bool(): put(UInt32(rng.int(0...40)), at: 0)
        case .startBulkReceiving:
            if small { put(UInt32(rng.pick([0, 512, 0x100_0000, 0x100_0001, 0x800_0000, 0x800_0001])), at: 4) }
            gapValue = UInt64(get(UInt32.self, at: 4))
        case .controlPacket:
            if small { put(UInt16(smallLength), at: 8) }
            declared = Int(get(UInt16.self, at: 8))
        case .bulkPacket:
            if small {
                put(UInt16(smallLength), at: 2)
                if headerLength == 10 { put(UInt16(0), at: 8) }
            }
            declared = Int(get(UInt16.self, at: 2)) | (headerLength == 10 ? Int(get(UInt16.self, at: 8)) << 16 : 0)
            gapValue = UInt64(declared!)
        case .isoPacket, .interruptPacket:
            if small { put(UInt16(smallLength), at: 2) }
            declared = Int(get(UInt16.self, at: 2))
        case .bufferedBulkPacket:
            if small { put(UInt32(smallLength), at: 4) }
            declared = Int(get(UInt32.self, at: 4))
            gapValue = UInt64(declared!)
        default: break
        }
        var data: [UInt8] = []
        if type == .filterFilter {
            switch rng.int(0..<4) {
            case 0: data = Array(USBRedirFilter.format(MessageGenerator.filterRules(&rng)).utf8) + [0]
            case 1: data = Array("0x03,-1,-1,-1,1|garbage".utf8) + [0]
            case 2: data = Array(USBRedirFilter.format(MessageGenerator.filterRules(&rng)).utf8)
            default: data = []
            }
        } else if let declared, declared <= 4096, rng.int(0..<3) != 0 {
            data = rng.bytes(declared)
        } else if USBRedirMessageLayout.of(type).carriesData || rng.oneIn(8) {
            data = rng.bytes(rng.int(0...8))
        }
        var length = headerLength + data.count
        if rng.oneIn(20) && headerLength > 0 {
            length = rng.int(0..<headerLength)   // shorter than the type header
            data = []
            h = Array(h.prefix(length))
        }
        var out: [UInt8] = []
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        le(type.rawValue)
        le(UInt32(length))
        if n.isActive(.ids64Bit) { le(rng.next()) } else { le(rng.u32()) }
        out += h + data
        // A data packet whose header is accepted by C and refused only by our lower limit.
        let isGap = inLimitGap(gapValue) && length >= headerLength
        return (out, isGap)
    }
}
