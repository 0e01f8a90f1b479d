import NIOCore
import Testing
@testable import USBRedirProtocol

/// Raw wire bytes for hand-made packets.
struct WireWriter {
    var bytes: [UInt8] = []
    mutating func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func header(_ type: UInt32, length: UInt32, id: UInt64 = 7, wide: Bool = false) {
        le(type)
        le(length)
        if wide { le(id) } else { le(UInt32(truncatingIfNeeded: id)) }
    }
    mutating func header(_ type: USBRedirMessageType, length: some BinaryInteger, id: UInt64 = 7, wide: Bool = false) {
        header(type.rawValue, length: UInt32(length), id: id, wide: wide)
    }
}

@Suite("Parser robustness")
struct ParserRobustnessTests {
    // MARK: Fuzzing

    /// A short valid stream with the start offset of each packet.
    static func baseStream(sender: USBRedirRole, senderCaps: USBRedirCapabilities, receiverCaps: USBRedirCapabilities,
                           _ rng: inout SplitMix64) throws -> (bytes: [UInt8], starts: [Int]) {
        let n = USBRedirNegotiation(role: sender, ours: senderCaps, peer: receiverCaps)
        var packets = [USBRedirPacket(.hello(.init(version: MessageGenerator.version(&rng), capabilities: senderCaps)))]
        packets += (0..<rng.int(0...6)).map { _ in MessageGenerator.packet(sender: sender, n, &rng) }
        var out = ByteBuffer()
        var starts: [Int] = []
        for p in packets {
            starts.append(out.readableBytes)
            try out.writeUSBRedirPacket(p, negotiation: n)
        }
        return (out.allBytes, starts)
    }

    static func mutate(_ bytes: inout [UInt8], starts: [Int], other: [UInt8], _ rng: inout SplitMix64) {
        func put32(_ v: UInt32, at offset: Int) {
            for i in 0..<4 where offset + i < bytes.count { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
        }
        let start = rng.pick(starts)
        switch rng.int(0..<9) {
        case 0:   // flip bytes
            for _ in 0..<rng.int(1...4) where !bytes.isEmpty { bytes[rng.int(0..<bytes.count)] ^= UInt8(rng.int(1...255)) }
        case 1:   // truncate
            bytes = Array(bytes.prefix(rng.int(0...bytes.count)))
        case 2:   // splice in the tail of another stream
            bytes = Array(bytes.prefix(rng.int(0...bytes.count))) + other.suffix(rng.int(0...other.count))
        case 3:   // random type field
            let types: [UInt32] = [rng.u32(), UInt32(rng.int(0...27)), UInt32(rng.int(100...104)),
                                   UInt32(rng.int(28...99)), 105, UInt32.max]
            put32(rng.pick(types), at: start)
        case 4:   // random or huge length field
            let max = UInt32(USBRedirLimits.maxDataLength)
            let lengths: [UInt32] = [0, 1, UInt32.max, 0x8000_0000, max, max + 10, max + 289, max + 290, rng.u32(),
                                     UInt32(rng.int(0...300))]
            put32(rng.pick(lengths), at: start + 4)
        case 5:   // insert random bytes
            bytes.insert(contentsOf: rng.bytes(rng.int(1...16)), at: rng.int(0...bytes.count))
        case 6:   // a second hello, or a packet repeated
            // (offsets are those of the unmutated stream; earlier mutations may have cut it)
            let end = min(starts.count > 1 ? starts[1] : bytes.count, bytes.count)
            bytes.insert(contentsOf: bytes.prefix(end), at: min(rng.pick(starts), bytes.count))
        case 7:   // drop the hello
            if starts.count > 1 { bytes.removeFirst(min(starts[1], bytes.count)) }
        default:  // garbage id / header bytes
            put32(rng.u32(), at: start + rng.int(0...12))
        }
    }

    /// The error's case name.
    static func kind(_ e: USBRedirProtocolError) -> String {
        Mirror(reflecting: e).children.first?.label ?? "\(e)"
    }

    @Test("10,000 random and mutated streams: no crash, bounded buffer, sticky errors")
    func fuzz() throws {
        let seed = TestSeed.derive("fuzz")
        var rng = SplitMix64(seed: seed)
        var outcomes: [String: Int] = [:]
        var errorKinds = Set<String>()
        for i in 0..<10_000 {
            let receiver: USBRedirRole = rng.bool() ? .host : .guest
            let senderCaps = MessageGenerator.capabilities(&rng)
            let receiverCaps = rng.bool() ? senderCaps : MessageGenerator.capabilities(&rng)
            var bytes: [UInt8]
            var intactPackets: Int?   // set for an unmutated stream: it must parse completely
            if rng.oneIn(10) {
                bytes = rng.bytes(rng.int(0...600))
            } else {
                let base = try Self.baseStream(sender: receiver.peer, senderCaps: senderCaps,
                                               receiverCaps: receiverCaps, &rng)
                let other = try Self.baseStream(sender: rng.bool() ? receiver.peer : receiver,
                                                senderCaps: receiverCaps, receiverCaps: senderCaps, &rng)
                bytes = base.bytes
                // A fifth stay intact (and must parse to the end), the rest get 1-3 mutations.
                let mutations = rng.oneIn(5) ? 0 : rng.int(1...3)
                if mutations == 0 { intactPackets = base.starts.count }
                for _ in 0..<mutations { Self.mutate(&bytes, starts: base.starts, other: other.bytes, &rng) }
            }
            let context = Comment(rawValue: "seed \(seed) case \(i) receiver \(receiver) caps \(senderCaps.rawValue)/\(receiverCaps.rawValue)")

            var parser = USBRedirParser(role: receiver, capabilities: receiverCaps)
            var firstError: USBRedirProtocolError?
            var packets = 0
            let maxChunk = rng.pick([1, 16, 512, Int.max])
            var offset = 0
            repeat {
                let n = min(bytes.count - offset, maxChunk == Int.max ? bytes.count : rng.int(1...maxChunk))
                parser.append(bytes[offset..<offset + n])
                offset += n
                do {
                    while let packet = try parser.nextPacket() {
                        packets += 1
                        #expect(firstError == nil, "a packet after an error; \(context)")
                        // Whatever the parser returns, our serializer must accept as the sender's packet.
                        if let peer = parser.negotiation.peer {
                            let n = USBRedirNegotiation(role: receiver.peer, ours: peer, peer: receiverCaps)
                            var out = ByteBuffer()
                            #expect(throws: Never.self, context) { try out.writeUSBRedirPacket(packet, negotiation: n) }
                        }
                    }
                    #expect(firstError == nil, "no error after an error; \(context)")
                } catch {
                    if let firstError {
                        #expect(error == firstError, "a different error after \(firstError); \(context)")
                    } else {
                        firstError = error
                        errorKinds.insert(Self.kind(error))
                    }
                }
                #expect(parser.bufferedByteCount <= USBRedirParser.maxBufferedBytes, context)
            } while offset < bytes.count
            if let firstError {
                #expect(throws: firstError, context) { try parser.nextPacket() }
                outcomes["threw", default: 0] += 1
            } else {
                outcomes[parser.bufferedByteCount == 0 ? "clean" : "incomplete", default: 0] += 1
            }
            if let intactPackets {
                #expect(firstError == nil && packets == intactPackets && parser.bufferedByteCount == 0, context)
            }
            outcomes["packets", default: 0] += packets
        }
        #expect(outcomes["threw", default: 0] > 3000, "\(outcomes)")
        #expect(outcomes["clean", default: 0] + outcomes["incomplete", default: 0] > 1000, "\(outcomes)")
        #expect(errorKinds.count >= 10, "error kinds seen: \(errorKinds.sorted())")
    }

    // MARK: Each error, one at a time

    /// A parser for `receiver` that has taken the peer's hello.
    static func parser(_ receiver: USBRedirRole, caps: USBRedirCapabilities = .all,
                       peerCaps: USBRedirCapabilities = .all) throws -> USBRedirParser {
        var p = USBRedirParser(role: receiver, capabilities: caps)
        let n = USBRedirNegotiation(role: receiver.peer, ours: peerCaps)
        p.append(try ByteBuffer.usbRedirStream([.init(.hello(.init(version: "peer", capabilities: peerCaps)))], n).allBytes)
        let hello = try p.nextPacket()
        #expect(hello?.message == .hello(.init(version: "peer", capabilities: peerCaps)))
        return p
    }

    /// Feeds bytes and expects exactly `error`, then the same error again.
    static func expectError(_ error: USBRedirProtocolError, _ parser: inout USBRedirParser, _ bytes: [UInt8],
                            sourceLocation: SourceLocation = #_sourceLocation) {
        parser.append(bytes)
        #expect(throws: error, sourceLocation: sourceLocation) { try parser.nextPacket() }
        // Sticky: more (even valid) bytes change nothing.
        parser.append([UInt8](repeating: 0, count: 40))
        #expect(throws: error, sourceLocation: sourceLocation) { try parser.nextPacket() }
    }

    @Test("unknown packet type", arguments: [UInt32(28), 99, 105, 0x8000_0000, .max])
    func unknownType(type: UInt32) throws {
        var p = try Self.parser(.guest)
        var w = WireWriter()
        w.header(type, length: 0, wide: true)
        Self.expectError(.unknownType(type), &p, w.bytes)
    }

    @Test("message sent by the wrong role")
    func wrongDirection() throws {
        var guest = try Self.parser(.guest)
        var w = WireWriter()
        w.header(.reset, length: 0, wide: true)
        Self.expectError(.wrongDirection(.reset, sender: .host), &guest, w.bytes)

        var host = try Self.parser(.host)
        w = WireWriter()
        w.header(.deviceConnect, length: 10, wide: true)
        w.bytes += [UInt8](repeating: 0, count: 10)
        Self.expectError(.wrongDirection(.deviceConnect, sender: .guest), &host, w.bytes)

        // iso and buffered bulk only exist in their data direction.
        host = try Self.parser(.guest)
        w = WireWriter()
        w.header(.isoPacket, length: 4, wide: true)
        w.bytes += [0x01, 0, 8, 0]   // host sending on OUT endpoint 1: no data possible
        Self.expectError(.wrongDirection(.isoPacket, sender: .host), &host, w.bytes)

        var hostFromGuest = try Self.parser(.host)
        w = WireWriter()
        w.header(.interruptPacket, length: 4, wide: true)
        w.bytes += [0x81, 0, 8, 0]   // guest on IN endpoint: that is the host's to send
        Self.expectError(.wrongDirection(.interruptPacket, sender: .guest), &hostFromGuest, w.bytes)
    }

    @Test("message whose capability is not active")
    func missingCapability() throws {
        let noFilter = InteropConfig.without(.all, [.filter])
        var p = try Self.parser(.host, caps: noFilter)
        var w = WireWriter()
        w.header(.filterReject, length: 0, wide: true)
        Self.expectError(.missingCapability(.filterReject, .filter), &p, w.bytes)

        // The peer lacks it: the library would accept this (it checks its own caps
        // only); a compliant peer never sends it, so we are stricter.
        p = try Self.parser(.guest, peerCaps: InteropConfig.without(.all, [.bulkReceiving]))
        w = WireWriter()
        w.header(.bufferedBulkPacket, length: 10, wide: true)
        w.bytes += [UInt8](repeating: 0, count: 10)
        Self.expectError(.missingCapability(.bufferedBulkPacket, .bulkReceiving), &p, w.bytes)

        p = try Self.parser(.host, caps: InteropConfig.without(.all, [.deviceDisconnectAck]))
        w = WireWriter()
        w.header(.deviceDisconnectAck, length: 0, wide: true)
        Self.expectError(.missingCapability(.deviceDisconnectAck, .deviceDisconnectAck), &p, w.bytes)
    }

    @Test("anything before hello")
    func helloNotFirst() {
        var p = USBRedirParser(role: .host, capabilities: .all)
        var w = WireWriter()
        w.header(.reset, length: 0)
        Self.expectError(.helloExpectedFirst(.reset), &p, w.bytes)
        #expect(p.negotiation.hasPeerHello == false)
    }

    @Test("second hello")
    func duplicateHello() throws {
        var p = try Self.parser(.guest, peerCaps: InteropConfig.full32)
        var w = WireWriter()
        w.header(.hello, length: 68)
        w.bytes += [UInt8](repeating: 0, count: 68)
        Self.expectError(.duplicateHello, &p, w.bytes)
    }

    @Test("length shorter than the type header")
    func lengthShorterThanHeader() throws {
        var p = try Self.parser(.host)
        var w = WireWriter()
        w.header(.setConfiguration, length: 0, wide: true)
        Self.expectError(.lengthShorterThanHeader(.setConfiguration, length: 0, headerLength: 1), &p, w.bytes)

        p = USBRedirParser(role: .host, capabilities: .all)
        w = WireWriter()
        w.header(.hello, length: 63)
        Self.expectError(.lengthShorterThanHeader(.hello, length: 63, headerLength: 64), &p, w.bytes)

        // 288-byte ep_info with bulk_streams: 160 bytes are too short.
        p = try Self.parser(.guest)
        w = WireWriter()
        w.header(.epInfo, length: 160, wide: true)
        Self.expectError(.lengthShorterThanHeader(.epInfo, length: 160, headerLength: 288), &p, w.bytes)
    }

    @Test("data on a message that carries none, refused from its header")
    func unexpectedData() throws {
        var p = try Self.parser(.host)
        var w = WireWriter()
        w.header(.getConfiguration, length: 3, wide: true)   // no data bytes needed to refuse it
        Self.expectError(.unexpectedData(.getConfiguration, dataLength: 3), &p, w.bytes)

        // A data packet in its data-less direction: a guest's IN control request.
        p = try Self.parser(.host)
        w = WireWriter()
        w.header(.controlPacket, length: 10 + 4, wide: true)
        w.bytes += [0x80, 6, 0x80, 0, 0, 1, 0, 0, 4, 0] + [1, 2, 3, 4]
        Self.expectError(.unexpectedData(.controlPacket, dataLength: 4), &p, w.bytes)
    }

    @Test("declared data longer than the limit, refused before the data arrives")
    func dataTooLong() throws {
        let limit = USBRedirLimits.maxDataLength
        var p = try Self.parser(.guest)
        var w = WireWriter()
        w.header(.bulkPacket, length: UInt32(10 + limit + 1), wide: true)
        w.bytes += [0x81, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01]    // length field is irrelevant here
        Self.expectError(.dataTooLong(.bulkPacket, length: UInt64(limit + 1), limit: limit), &p, w.bytes)

        p = try Self.parser(.guest)
        w = WireWriter()
        w.header(.bulkPacket, length: UInt32.max, wide: true)
        Self.expectError(.dataTooLong(.bulkPacket, length: UInt64(UInt32.max) - 10, limit: limit), &p, w.bytes)

        p = USBRedirParser(role: .guest, capabilities: .all)
        w = WireWriter()
        w.header(.hello, length: UInt32(64 + limit + 1))
        Self.expectError(.dataTooLong(.hello, length: UInt64(limit + 1), limit: limit), &p, w.bytes)

        // Declared transfer length in a data-less direction, over the limit.
        p = try Self.parser(.host)
        w = WireWriter()
        w.header(.bulkPacket, length: 10, wide: true)
        w.bytes += [0x81, 0, 0x01, 0x00, 0, 0, 0, 0, 0x00, 0x01]    // 0x0100_0001
        Self.expectError(.dataTooLong(.bulkPacket, length: UInt64(limit + 1), limit: limit), &p, w.bytes)
    }

    @Test("a packet of exactly the limit is accepted; the buffer stays bounded")
    func largestPacket() throws {
        let limit = USBRedirLimits.maxDataLength
        var p = try Self.parser(.guest)
        let n = USBRedirNegotiation(role: .host, ours: .all, peer: .all)
        let payload = ByteBuffer(repeating: 0xa5, count: limit)
        let packet = USBRedirPacket(id: 1, .bulkPacket(.init(endpoint: 0x81, status: 0, length: UInt32(limit),
                                                              streamID: 0, data: payload)))
        var bytes = try ByteBuffer.usbRedirStream([packet, packet], n)
        // Header only: waiting, not refusing.
        p.append(bytes.readSlice(length: 26)!)
        #expect(try p.nextPacket() == nil)
        var got: [USBRedirPacket] = []
        while bytes.readableBytes > 0 {
            p.append(bytes.readSlice(length: min(bytes.readableBytes, 3 * 1024 * 1024 + 7))!)
            while let packet = try p.nextPacket() { got.append(packet) }
            #expect(p.bufferedByteCount <= USBRedirParser.maxBufferedBytes)
        }
        #expect(got == [packet, packet])
        #expect(p.bufferedByteCount == 0)
    }

    /// The fuzz streams above stay far below the limit, so their bound
    /// check cannot fail. Here a legal packet of `limit + firstOffset` data
    /// bytes is followed by a header declaring `limit + overBy` and then more
    /// than the limit of further bytes, fed in chunks as a socket would: the
    /// parser must return the legal packet, report dataTooLong for the second
    /// from its header, and never hold more than one packet's worth.
    @Test("declared lengths near the limit, fed past it: bounded buffer, the error reported",
          arguments: [(0, 1), (-1, 1), (0, 4096), (-1, 1 << 20), (0, 8 << 20)])
    func nearTheLimit(firstOffset: Int, overBy: Int) throws {
        let limit = USBRedirLimits.maxDataLength
        var p = try Self.parser(.guest)
        let n = USBRedirNegotiation(role: .host, ours: .all, peer: .all)
        let size = limit + firstOffset
        let packet = USBRedirPacket(id: 1, .bulkPacket(.init(endpoint: 0x81, status: 0, length: UInt32(size),
                                                              streamID: 0, data: ByteBuffer(repeating: 0xa5, count: size))))
        var stream = try ByteBuffer.usbRedirStream([packet], n)
        let declared = limit + overBy
        var w = WireWriter()
        w.header(.bulkPacket, length: UInt32(10 + declared), wide: true)
        w.bytes += [0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        stream.writeBytes(w.bytes)
        let secondHeaderEnd = stream.writerIndex
        // All the declared data and more: a parser that waited for it would
        // report a different error, and late (every case), and with the larger
        // excesses hold more than maxBufferedBytes on the way (8 MiB: well
        // past the bound even with a 1 MiB chunk still to come).
        stream.writeRepeatingByte(0x5a, count: declared + (1 << 20))

        var got: [USBRedirPacket] = []
        var reported: USBRedirProtocolError?
        var largest = 0
        while stream.readableBytes > 0 && reported == nil {
            p.append(stream.readSlice(length: min(stream.readableBytes, (1 << 20) + 7))!)
            do {
                while let next = try p.nextPacket() { got.append(next) }
            } catch {
                reported = error
            }
            largest = max(largest, p.bufferedByteCount)
            #expect(p.bufferedByteCount <= USBRedirParser.maxBufferedBytes, "after \(stream.readerIndex) bytes fed")
        }
        #expect(got == [packet])
        #expect(reported == .dataTooLong(.bulkPacket, length: UInt64(declared), limit: limit))
        // Refused from the header, within one chunk of it, not after its data.
        #expect(stream.readerIndex < secondHeaderEnd + (1 << 20) + 7, "error after \(stream.readerIndex) of \(stream.writerIndex) bytes")
        #expect(largest <= USBRedirParser.maxBufferedBytes, "held at most \(largest) bytes")
        // Sticky: more bytes change nothing.
        p.append(stream.readSlice(length: min(stream.readableBytes, 4096)) ?? ByteBuffer())
        #expect(throws: USBRedirProtocolError.dataTooLong(.bulkPacket, length: UInt64(declared), limit: limit)) { try p.nextPacket() }
    }

    @Test("data length not the declared transfer length")
    func dataLengthMismatch() throws {
        var p = try Self.parser(.guest)
        var w = WireWriter()
        w.header(.controlPacket, length: 10 + 5, wide: true)
        w.bytes += [0x80, 6, 0x80, 0, 0, 1, 0, 0, 10, 0] + [1, 2, 3, 4, 5]
        Self.expectError(.dataLengthMismatch(.controlPacket, declared: 10, actual: 5), &p, w.bytes)

        p = try Self.parser(.host)
        w = WireWriter()
        w.header(.isoPacket, length: 4, wide: true)
        w.bytes += [0x02, 0, 3, 0]       // OUT iso from the guest declaring 3 bytes, carrying none
        Self.expectError(.dataLengthMismatch(.isoPacket, declared: 3, actual: 0), &p, w.bytes)
    }

    @Test("filter_filter must end in NUL")
    func filterNotTerminated() throws {
        for data in [Array("-1,-1,-1,-1,1".utf8), []] {
            var p = try Self.parser(.guest)
            var w = WireWriter()
            w.header(.filterFilter, length: UInt32(data.count), wide: true)
            w.bytes += data
            Self.expectError(.invalidField(.filterFilter, "rules are not NUL-terminated"), &p, w.bytes)
        }
        var p = try Self.parser(.guest)
        var w = WireWriter()
        w.header(.filterFilter, length: 14, wide: true)
        w.bytes += Array("-1,-1,-1,-1,1".utf8) + [0]
        #expect(try p.nextPacket() == nil)
        p.append(w.bytes)
        #expect(try p.nextPacket()?.message == .filterFilter(.init(rules: "-1,-1,-1,-1,1")))
    }

    @Test("interface_count above 32", arguments: [UInt32(33), 255, .max])
    func interfaceCount(count: UInt32) throws {
        var p = try Self.parser(.guest)
        var w = WireWriter()
        w.header(.interfaceInfo, length: 132, wide: true)
        w.le(count)
        w.bytes += [UInt8](repeating: 0, count: 128)
        Self.expectError(.invalidField(.interfaceInfo, "interface_count \(count) > 32"), &p, w.bytes)
    }

    @Test("interface_count of 32 is fine")
    func interfaceCount32() throws {
        var p = try Self.parser(.guest)
        var w = WireWriter()
        w.header(.interfaceInfo, length: 132, wide: true)
        w.le(UInt32(32))
        w.bytes += [UInt8](repeating: 3, count: 128)
        p.append(w.bytes)
        guard case .interfaceInfo(let info)? = try p.nextPacket()?.message else {
            Issue.record("no interface_info")
            return
        }
        #expect(info.interfaceCount == 32 && info.interfaceClass == [UInt8](repeating: 3, count: 32))
    }

    @Test("interrupt and bulk receiving need an IN endpoint", arguments: [
        (USBRedirMessageType.startInterruptReceiving, USBRedirRole.guest, [UInt8(0x01)], 0),
        (.stopInterruptReceiving, .guest, [0x02], 0),
        (.interruptReceivingStatus, .host, [0, 0x03], 1),
        (.startBulkReceiving, .guest, [1, 0, 0, 0, 0, 2, 0, 0, 0x04, 1], 8),
        (.stopBulkReceiving, .guest, [1, 0, 0, 0, 0x05], 4),
        (.bulkReceivingStatus, .host, [1, 0, 0, 0, 0x06, 0], 4),
    ])
    func outEndpoint(type: USBRedirMessageType, sender: USBRedirRole, header: [UInt8], endpointOffset: Int) throws {
        var p = try Self.parser(sender.peer)
        var w = WireWriter()
        w.header(type, length: header.count, wide: true)
        w.bytes += header
        let ep = header[endpointOffset]
        Self.expectError(.invalidField(type, "endpoint 0x\(String(ep, radix: 16)) is not an IN endpoint"), &p, w.bytes)

        // The same header with the endpoint made IN is fine.
        var inHeader = header
        inHeader[endpointOffset] |= 0x80
        p = try Self.parser(sender.peer)
        w = WireWriter()
        w.header(type, length: header.count, wide: true)
        w.bytes += inHeader
        p.append(w.bytes)
        let valid = try #require(try p.nextPacket())

        // And our serializer refuses the OUT one, as usbredirparser_send_* does.
        var h = ByteBuffer(bytes: header)
        let invalid = USBRedirPacket(id: valid.id, ByteBuffer.decodeUSBRedirMessage(
            type: type, header: &h, data: nil, negotiation: p.negotiation))
        let n = USBRedirNegotiation(role: sender, ours: .all, peer: .all)
        var out = ByteBuffer()
        #expect(throws: USBRedirProtocolError.invalidField(type, "endpoint 0x\(String(ep, radix: 16)) is not an IN endpoint")) {
            try out.writeUSBRedirPacket(invalid, negotiation: n)
        }
        #expect(throws: Never.self) { try out.writeUSBRedirPacket(valid, negotiation: n) }
    }

    @Test("bulk_streams without ep_info_max_packet_size is not active (as usbredirparser_verify_caps)")
    func bulkStreamsNeedMaxPacketSize() {
        let n = USBRedirNegotiation(role: .host, ours: .all, peer: InteropConfig.streamsWithoutMPS)
        #expect(!n.isActive(.bulkStreams))
        #expect(!n.isActive(.epInfoMaxPacketSize))
        #expect(USBRedirMessageLayout.of(.epInfo).headerLength(of: .epInfo, n) == 96)
        let m = USBRedirNegotiation(role: .host, ours: .all, peer: .all)
        #expect(m.isActive(.bulkStreams))
    }

    @Test("serializer refusals")
    func serializerRefusals() {
        let narrow = USBRedirNegotiation(role: .host, ours: InteropConfig.full32, peer: .all)
        var out = ByteBuffer()
        #expect(throws: USBRedirProtocolError.wrongDirection(.reset, sender: .host)) {
            try out.writeUSBRedirPacket(.init(.reset), negotiation: narrow)
        }
        #expect(throws: USBRedirProtocolError.idTooLarge(1 << 32)) {
            try out.writeUSBRedirPacket(.init(id: 1 << 32, .configurationStatus(.init(status: 0, configuration: 1))),
                                        negotiation: narrow)
        }
        let noFilter = USBRedirNegotiation(role: .guest, ours: .all, peer: InteropConfig.without(.all, [.filter]))
        #expect(throws: USBRedirProtocolError.missingCapability(.filterReject, .filter)) {
            try out.writeUSBRedirPacket(.init(.filterReject), negotiation: noFilter)
        }
        #expect(out.readableBytes == 0)
    }
}
