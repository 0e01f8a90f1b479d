import NIOCore

extension ByteBuffer {
    @inline(__always)
    mutating func le<T: FixedWidthInteger>(_: T.Type = T.self) -> T {
        // Callers have checked the header length first, so a short read is a bug.
        readInteger(endianness: .little, as: T.self)!
    }

    mutating func leArray<T: FixedWidthInteger>(_: T.Type, count: Int) -> [T] {
        (0..<count).map { _ in le(T.self) }
    }

    /// Decodes a type-specific header of exactly `headerLength` readable bytes
    /// (the caller sliced it) plus its data into a message.
    static func decodeUSBRedirMessage(
        type: USBRedirMessageType, header h: inout ByteBuffer, data: ByteBuffer?,
        negotiation: USBRedirNegotiation
    ) -> USBRedirMessage {
        switch type {
        case .hello:
            let raw = h.readBytes(length: USBRedirLimits.versionLength)!
            let version = String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            var caps = data ?? ByteBuffer()
            let word: UInt32 = caps.readableBytes >= 4 ? caps.le() : 0
            return .hello(.init(version: version, capabilities: .init(rawValue: word)))
        case .deviceConnect:
            return .deviceConnect(.init(
                speed: h.le(), deviceClass: h.le(), deviceSubclass: h.le(), deviceProtocol: h.le(),
                vendorID: h.le(), productID: h.le(),
                deviceVersionBCD: h.readableBytes >= 2 ? h.le() : 0))
        case .deviceDisconnect: return .deviceDisconnect
        case .reset: return .reset
        case .interfaceInfo:
            let n = USBRedirLimits.maxInterfaces
            return .interfaceInfo(.init(
                interfaceCount: h.le(), interface: h.leArray(UInt8.self, count: n),
                interfaceClass: h.leArray(UInt8.self, count: n),
                interfaceSubclass: h.leArray(UInt8.self, count: n),
                interfaceProtocol: h.leArray(UInt8.self, count: n)))
        case .epInfo:
            let n = USBRedirLimits.endpointCount
            let types = h.leArray(UInt8.self, count: n)
            let intervals = h.leArray(UInt8.self, count: n)
            let interfaces = h.leArray(UInt8.self, count: n)
            let mps = h.readableBytes >= 2 * n ? h.leArray(UInt16.self, count: n) : []
            let streams = h.readableBytes >= 4 * n ? h.leArray(UInt32.self, count: n) : []
            return .epInfo(.init(type: types, interval: intervals, interface: interfaces,
                                 maxPacketSize: mps, maxStreams: streams))
        case .setConfiguration: return .setConfiguration(.init(configuration: h.le()))
        case .getConfiguration: return .getConfiguration
        case .configurationStatus: return .configurationStatus(.init(status: h.le(), configuration: h.le()))
        case .setAltSetting: return .setAltSetting(.init(interface: h.le(), alt: h.le()))
        case .getAltSetting: return .getAltSetting(.init(interface: h.le()))
        case .altSettingStatus: return .altSettingStatus(.init(status: h.le(), interface: h.le(), alt: h.le()))
        case .startIsoStream:
            return .startIsoStream(.init(endpoint: h.le(), packetsPerURB: h.le(), urbCount: h.le()))
        case .stopIsoStream: return .stopIsoStream(.init(endpoint: h.le()))
        case .isoStreamStatus: return .isoStreamStatus(.init(status: h.le(), endpoint: h.le()))
        case .startInterruptReceiving: return .startInterruptReceiving(.init(endpoint: h.le()))
        case .stopInterruptReceiving: return .stopInterruptReceiving(.init(endpoint: h.le()))
        case .interruptReceivingStatus: return .interruptReceivingStatus(.init(status: h.le(), endpoint: h.le()))
        case .allocBulkStreams: return .allocBulkStreams(.init(endpoints: h.le(), streamCount: h.le()))
        case .freeBulkStreams: return .freeBulkStreams(.init(endpoints: h.le()))
        case .bulkStreamsStatus:
            return .bulkStreamsStatus(.init(endpoints: h.le(), streamCount: h.le(), status: h.le()))
        case .cancelDataPacket: return .cancelDataPacket
        case .filterReject: return .filterReject
        case .filterFilter:
            var d = data ?? ByteBuffer()
            let bytes = d.readBytes(length: d.readableBytes) ?? []
            return .filterFilter(.init(rules: String(decoding: bytes.dropLast(), as: UTF8.self)))
        case .deviceDisconnectAck: return .deviceDisconnectAck
        case .startBulkReceiving:
            return .startBulkReceiving(.init(streamID: h.le(), bytesPerTransfer: h.le(),
                                             endpoint: h.le(), transferCount: h.le()))
        case .stopBulkReceiving: return .stopBulkReceiving(.init(streamID: h.le(), endpoint: h.le()))
        case .bulkReceivingStatus:
            return .bulkReceivingStatus(.init(streamID: h.le(), endpoint: h.le(), status: h.le()))
        case .controlPacket:
            return .controlPacket(.init(endpoint: h.le(), request: h.le(), requestType: h.le(), status: h.le(),
                                        value: h.le(), index: h.le(), length: h.le(), data: data))
        case .bulkPacket:
            let endpoint: UInt8 = h.le(), status: UInt8 = h.le(), low: UInt16 = h.le(), stream: UInt32 = h.le()
            let high: UInt16 = h.readableBytes >= 2 ? h.le() : 0
            let length = UInt32(low) | UInt32(high) << 16
            return .bulkPacket(.init(endpoint: endpoint, status: status, length: length, streamID: stream, data: data))
        case .isoPacket:
            return .isoPacket(.init(endpoint: h.le(), status: h.le(), length: h.le(), data: data))
        case .interruptPacket:
            return .interruptPacket(.init(endpoint: h.le(), status: h.le(), length: h.le(), data: data))
        case .bufferedBulkPacket:
            return .bufferedBulkPacket(.init(streamID: h.le(), length: h.le(), endpoint: h.le(),
                                             status: h.le(), data: data))
        }
    }
}
