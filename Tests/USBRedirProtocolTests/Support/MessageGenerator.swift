import NIOCore
@testable import USBRedirProtocol

/// Random but valid usbredir messages: what `sender` may send once
/// `negotiation` is settled (fields a capability-less header lacks are 0,
/// data only in the data direction, lengths consistent, endpoints as the
/// C parser requires them).
enum MessageGenerator {
    static let controlTypes: [USBRedirMessageType] = USBRedirMessageType.allCases.filter {
        $0 != .hello && $0.rawValue < 100
    }
    static let dataTypes: [USBRedirMessageType] = USBRedirMessageType.allCases.filter { $0.rawValue >= 100 }

    /// Every non-hello type `sender` may send with these capabilities.
    static func sendableTypes(sender: USBRedirRole, _ negotiation: USBRedirNegotiation) -> [USBRedirMessageType] {
        USBRedirMessageType.allCases.filter { type in
            guard type != .hello, USBRedirMessageLayout.of(type).canBeSent(by: sender) else { return false }
            if let cap = USBRedirMessageLayout.requiredCapability(type) { return negotiation.isActive(cap) }
            return true
        }
    }

    static func id(_ negotiation: USBRedirNegotiation, _ rng: inout SplitMix64) -> UInt64 {
        switch rng.int(0..<4) {
        case 0: return 0
        case 1: return negotiation.isActive(.ids64Bit) ? UInt64.max : UInt64(UInt32.max)
        default: return negotiation.isActive(.ids64Bit) ? rng.next() : UInt64(rng.u32())
        }
    }

    static func capabilities(_ rng: inout SplitMix64) -> USBRedirCapabilities {
        USBRedirCapabilities(rawValue: UInt32(rng.u8()))
    }

    static func version(_ rng: inout SplitMix64) -> String {
        let n = rng.oneIn(8) ? 63 : rng.int(0...24)
        return String(decoding: (0..<n).map { _ in UInt8(rng.int(0x20...0x7e)) }, as: UTF8.self)
    }

    static func filterRule(_ rng: inout SplitMix64) -> USBRedirFilterRule {
        func field(_ max: Int) -> Int {
            switch rng.int(0..<4) {
            case 0: return -1
            case 1: return rng.pick([0, max])
            default: return rng.int(0...max)
            }
        }
        return USBRedirFilterRule(deviceClass: field(255), vendorID: field(0xffff), productID: field(0xffff),
                                  deviceVersionBCD: field(0xffff), allow: rng.bool())
    }

    static func filterRules(_ rng: inout SplitMix64, max: Int = 5) -> [USBRedirFilterRule] {
        (0..<rng.int(0...max)).map { _ in filterRule(&rng) }
    }

    private static func inEndpoint(_ rng: inout SplitMix64) -> UInt8 { 0x80 | rng.u8() & 0x8f }
    private static func anyEndpoint(_ rng: inout SplitMix64) -> UInt8 { rng.u8() & 0x8f }
    private static func endpoint(in isIn: Bool, _ rng: inout SplitMix64) -> UInt8 {
        (isIn ? 0x80 : 0) | rng.u8() & 0x0f
    }

    /// Payload length in the data direction: mostly small, sometimes a few KiB.
    private static func payloadLength(max: Int, _ rng: inout SplitMix64) -> Int {
        switch rng.int(0..<16) {
        case 0: return 0
        case 1: return min(max, rng.int(1024...4096))
        default: return min(max, rng.int(1...300))
        }
    }

    private static func payload(_ length: Int, _ rng: inout SplitMix64) -> ByteBuffer? {
        length == 0 ? nil : ByteBuffer(bytes: rng.bytes(length))
    }

    static func message(_ type: USBRedirMessageType, sender: USBRedirRole,
                        _ n: USBRedirNegotiation, _ rng: inout SplitMix64) -> USBRedirMessage {
        switch type {
        case .hello:
            return .hello(.init(version: version(&rng), capabilities: n.ours))
        case .deviceConnect:
            return .deviceConnect(.init(
                speed: rng.oneIn(3) ? rng.pick(USBRedirSpeed.allCases).rawValue : rng.u8(),
                deviceClass: rng.u8(), deviceSubclass: rng.u8(), deviceProtocol: rng.u8(),
                vendorID: rng.u16(), productID: rng.u16(),
                deviceVersionBCD: n.isActive(.connectDeviceVersion) ? rng.u16() : 0))
        case .deviceDisconnect: return .deviceDisconnect
        case .reset: return .reset
        case .interfaceInfo:
            let count = rng.oneIn(5) ? rng.pick([0, 32]) : rng.int(0...32)
            return .interfaceInfo(.init(
                interfaceCount: UInt32(count), interface: rng.bytes(32), interfaceClass: rng.bytes(32),
                interfaceSubclass: rng.bytes(32), interfaceProtocol: rng.bytes(32)))
        case .epInfo:
            let mps = n.isActive(.epInfoMaxPacketSize) ? (0..<32).map { _ in rng.u16() } : []
            let streams = n.isActive(.bulkStreams) ? (0..<32).map { _ in rng.u32() } : []
            return .epInfo(.init(type: rng.bytes(32), interval: rng.bytes(32), interface: rng.bytes(32),
                                 maxPacketSize: mps, maxStreams: streams))
        case .setConfiguration: return .setConfiguration(.init(configuration: rng.u8()))
        case .getConfiguration: return .getConfiguration
        case .configurationStatus: return .configurationStatus(.init(status: rng.u8(), configuration: rng.u8()))
        case .setAltSetting: return .setAltSetting(.init(interface: rng.u8(), alt: rng.u8()))
        case .getAltSetting: return .getAltSetting(.init(interface: rng.u8()))
        case .altSettingStatus: return .altSettingStatus(.init(status: rng.u8(), interface: rng.u8(), alt: rng.u8()))
        case .startIsoStream:
            return .startIsoStream(.init(endpoint: anyEndpoint(&rng), packetsPerURB: rng.u8(), urbCount: rng.u8()))
        case .stopIsoStream: return .stopIsoStream(.init(endpoint: anyEndpoint(&rng)))
        case .isoStreamStatus: return .isoStreamStatus(.init(status: rng.u8(), endpoint: anyEndpoint(&rng)))
        case .startInterruptReceiving: return .startInterruptReceiving(.init(endpoint: inEndpoint(&rng)))
        case .stopInterruptReceiving: return .stopInterruptReceiving(.init(endpoint: inEndpoint(&rng)))
        case .interruptReceivingStatus:
            return .interruptReceivingStatus(.init(status: rng.u8(), endpoint: inEndpoint(&rng)))
        case .allocBulkStreams: return .allocBulkStreams(.init(endpoints: rng.u32(), streamCount: rng.u32()))
        case .freeBulkStreams: return .freeBulkStreams(.init(endpoints: rng.u32()))
        case .bulkStreamsStatus:
            return .bulkStreamsStatus(.init(endpoints: rng.u32(), streamCount: rng.u32(), status: rng.u8()))
        case .cancelDataPacket: return .cancelDataPacket
        case .filterReject: return .filterReject
        case .filterFilter: return .filterFilter(.init(rules: USBRedirFilter.format(filterRules(&rng))))
        case .deviceDisconnectAck: return .deviceDisconnectAck
        case .startBulkReceiving:
            return .startBulkReceiving(.init(
                streamID: rng.u32(), bytesPerTransfer: UInt32(rng.int(0...USBRedirLimits.maxDataLength)),
                endpoint: inEndpoint(&rng), transferCount: rng.u8()))
        case .stopBulkReceiving: return .stopBulkReceiving(.init(streamID: rng.u32(), endpoint: inEndpoint(&rng)))
        case .bulkReceivingStatus:
            return .bulkReceivingStatus(.init(streamID: rng.u32(), endpoint: inEndpoint(&rng), status: rng.u8()))

        case .controlPacket:
            let ep: UInt8 = rng.oneIn(4) ? anyEndpoint(&rng) : rng.pick([0x00, 0x80])
            var request = USBRedirMessage.ControlPacket(
                endpoint: ep, request: rng.u8(), requestType: rng.u8(), status: rng.u8(),
                value: rng.u16(), index: rng.u16(), length: rng.u16())
            if USBRedirDataRules.expectsData(endpoint: ep, sender: sender) {
                let len = payloadLength(max: 0xffff, &rng)
                request.length = UInt16(len)
                request.data = payload(len, &rng)
            }
            return .controlPacket(request)
        case .bulkPacket:
            let ep = anyEndpoint(&rng)
            let maxLength = n.isActive(.bulkLength32Bit) ? USBRedirLimits.maxDataLength : 0xffff
            var packet = USBRedirMessage.BulkPacket(endpoint: ep, status: rng.u8(),
                                                    length: UInt32(rng.int(0...maxLength)), streamID: rng.u32())
            if USBRedirDataRules.expectsData(endpoint: ep, sender: sender) {
                // Now and then more than 16 bits of payload, so length_high carries something.
                let len = n.isActive(.bulkLength32Bit) && rng.oneIn(24)
                    ? rng.int(0x10000...0x12000) : payloadLength(max: maxLength, &rng)
                packet.length = UInt32(len)
                packet.data = payload(len, &rng)
            }
            return .bulkPacket(packet)
        case .isoPacket:
            // Only the data direction exists for iso: OUT from the guest, IN from the host.
            let ep = endpoint(in: sender == .host, &rng)
            let len = payloadLength(max: 0xffff, &rng)
            return .isoPacket(.init(endpoint: ep, status: rng.u8(), length: UInt16(len), data: payload(len, &rng)))
        case .interruptPacket:
            // The guest sends OUT transfers (data); the host IN data or an OUT status.
            let ep = sender == .guest ? endpoint(in: false, &rng) : anyEndpoint(&rng)
            if USBRedirDataRules.expectsData(endpoint: ep, sender: sender) {
                let len = payloadLength(max: 0xffff, &rng)
                return .interruptPacket(.init(endpoint: ep, status: rng.u8(), length: UInt16(len),
                                              data: payload(len, &rng)))
            }
            return .interruptPacket(.init(endpoint: ep, status: rng.u8(), length: rng.u16()))
        case .bufferedBulkPacket:
            let len = payloadLength(max: USBRedirLimits.maxDataLength, &rng)
            return .bufferedBulkPacket(.init(streamID: rng.u32(), length: UInt32(len), endpoint: inEndpoint(&rng),
                                             status: rng.u8(), data: payload(len, &rng)))
        }
    }

    /// A random packet (id and message) of a random sendable type.
    static func packet(sender: USBRedirRole, _ n: USBRedirNegotiation, _ rng: inout SplitMix64) -> USBRedirPacket {
        let type = rng.pick(sendableTypes(sender: sender, n))
        return USBRedirPacket(id: id(n, &rng), message(type, sender: sender, n, &rng))
    }
}

extension ByteBuffer {
    /// Serializes packets with our serializer; the test fails loudly if it refuses one.
    static func usbRedirStream(_ packets: [USBRedirPacket], _ negotiation: USBRedirNegotiation) throws -> ByteBuffer {
        var out = ByteBuffer()
        for p in packets { try out.writeUSBRedirPacket(p, negotiation: negotiation) }
        return out
    }
}

extension USBRedirParser {
    /// Feeds `bytes` in the given chunk sizes, draining after each chunk.
    mutating func parseAll(_ bytes: [UInt8], chunks: [Int]) throws(USBRedirProtocolError) -> [USBRedirPacket] {
        var packets: [USBRedirPacket] = []
        var offset = 0
        var i = 0
        while offset < bytes.count {
            let n = min(chunks.isEmpty ? bytes.count : max(1, chunks[i % chunks.count]), bytes.count - offset)
            append(bytes[offset..<offset + n])
            offset += n
            i += 1
            while let p = try nextPacket() { packets.append(p) }
        }
        return packets
    }
}

extension ByteBuffer {
    var allBytes: [UInt8] { getBytes(at: readerIndex, length: readableBytes) ?? [] }
}
