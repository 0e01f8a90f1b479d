import NIOCore

extension ByteBuffer {
    @inline(__always)
    mutating func putLE<T: FixedWidthInteger>(_ value: T) {
        writeInteger(value, endianness: .little)
    }

    mutating func putLE<T: FixedWidthInteger>(_ values: [T]) {
        for v in values { putLE(v) }
    }

    /// Writes the type-specific header of `message`, `headerLength` bytes long
    /// (fields a shorter, capability-less header lacks are left out).
    mutating func encodeUSBRedirTypeHeader(_ message: USBRedirMessage, headerLength: Int) {
        switch message {
        case .hello(let m):
            var version = Array(m.version.utf8.prefix(USBRedirLimits.versionLength - 1))
            version += Array(repeating: 0, count: USBRedirLimits.versionLength - version.count)
            writeBytes(version)
        case .deviceConnect(let m):
            putLE(m.speed); putLE(m.deviceClass); putLE(m.deviceSubclass); putLE(m.deviceProtocol)
            putLE(m.vendorID); putLE(m.productID)
            if headerLength >= 10 { putLE(m.deviceVersionBCD) }
        case .interfaceInfo(let m):
            putLE(m.interfaceCount); putLE(m.interface); putLE(m.interfaceClass)
            putLE(m.interfaceSubclass); putLE(m.interfaceProtocol)
        case .epInfo(let m):
            putLE(m.type); putLE(m.interval); putLE(m.interface)
            if headerLength >= 160 { putLE(m.maxPacketSize) }
            if headerLength >= 288 { putLE(m.maxStreams) }
        case .setConfiguration(let m): putLE(m.configuration)
        case .configurationStatus(let m): putLE(m.status); putLE(m.configuration)
        case .setAltSetting(let m): putLE(m.interface); putLE(m.alt)
        case .getAltSetting(let m): putLE(m.interface)
        case .altSettingStatus(let m): putLE(m.status); putLE(m.interface); putLE(m.alt)
        case .startIsoStream(let m): putLE(m.endpoint); putLE(m.packetsPerURB); putLE(m.urbCount)
        case .stopIsoStream(let m): putLE(m.endpoint)
        case .isoStreamStatus(let m): putLE(m.status); putLE(m.endpoint)
        case .startInterruptReceiving(let m): putLE(m.endpoint)
        case .stopInterruptReceiving(let m): putLE(m.endpoint)
        case .interruptReceivingStatus(let m): putLE(m.status); putLE(m.endpoint)
        case .allocBulkStreams(let m): putLE(m.endpoints); putLE(m.streamCount)
        case .freeBulkStreams(let m): putLE(m.endpoints)
        case .bulkStreamsStatus(let m): putLE(m.endpoints); putLE(m.streamCount); putLE(m.status)
        case .startBulkReceiving(let m):
            putLE(m.streamID); putLE(m.bytesPerTransfer); putLE(m.endpoint); putLE(m.transferCount)
        case .stopBulkReceiving(let m): putLE(m.streamID); putLE(m.endpoint)
        case .bulkReceivingStatus(let m): putLE(m.streamID); putLE(m.endpoint); putLE(m.status)
        case .controlPacket(let m):
            putLE(m.endpoint); putLE(m.request); putLE(m.requestType); putLE(m.status)
            putLE(m.value); putLE(m.index); putLE(m.length)
        case .bulkPacket(let m):
            putLE(m.endpoint); putLE(m.status); putLE(UInt16(truncatingIfNeeded: m.length)); putLE(m.streamID)
            if headerLength >= 10 { putLE(UInt16(truncatingIfNeeded: m.length >> 16)) }
        case .isoPacket(let m): putLE(m.endpoint); putLE(m.status); putLE(m.length)
        case .interruptPacket(let m): putLE(m.endpoint); putLE(m.status); putLE(m.length)
        case .bufferedBulkPacket(let m): putLE(m.streamID); putLE(m.length); putLE(m.endpoint); putLE(m.status)
        case .deviceDisconnect, .reset, .getConfiguration, .cancelDataPacket, .filterReject,
             .deviceDisconnectAck, .filterFilter:
            break
        }
    }
}

extension USBRedirMessage {
    /// The bytes after the type header: caps for hello, the NUL-terminated
    /// rules for filter_filter, the payload for data packets.
    var trailingData: ByteBuffer? {
        switch self {
        case .hello(let m):
            var b = ByteBuffer()
            b.putLE(m.capabilities.rawValue)
            return b
        case .filterFilter(let m):
            var b = ByteBuffer()
            b.writeString(m.rules)
            b.writeInteger(UInt8(0))
            return b
        case .controlPacket(let m): return m.data
        case .bulkPacket(let m): return m.data
        case .isoPacket(let m): return m.data
        case .interruptPacket(let m): return m.data
        case .bufferedBulkPacket(let m): return m.data
        default: return nil
        }
    }
}
