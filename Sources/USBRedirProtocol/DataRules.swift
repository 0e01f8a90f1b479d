import NIOCore

/// Direction rules for data packets, as usbredir's spec and C parser state
/// them: data travels guest->host for OUT endpoints and host->guest for IN
/// endpoints; the other direction carries only a status/length.
enum USBRedirDataRules {
    /// The endpoint and the declared transfer length of a data packet.
    static func transfer(of message: USBRedirMessage) -> (endpoint: UInt8, length: UInt64, data: ByteBuffer?)? {
        switch message {
        case .controlPacket(let p): (p.endpoint, UInt64(p.length), p.data)
        case .bulkPacket(let p): (p.endpoint, UInt64(p.length), p.data)
        case .isoPacket(let p): (p.endpoint, UInt64(p.length), p.data)
        case .interruptPacket(let p): (p.endpoint, UInt64(p.length), p.data)
        case .bufferedBulkPacket(let p): (p.endpoint, UInt64(p.length), p.data)
        default: nil
        }
    }

    static func expectsData(endpoint: UInt8, sender: USBRedirRole) -> Bool {
        let isIn = endpoint & 0x80 != 0
        return isIn == (sender == .host)
    }

    /// Checks one message against the rules; `sender` is the role that sent it.
    static func validate(_ message: USBRedirMessage, sender: USBRedirRole) throws(USBRedirProtocolError) {
        let type = message.type
        switch message {
        case .interfaceInfo(let info) where info.interfaceCount > UInt32(USBRedirLimits.maxInterfaces):
            throw .invalidField(type, "interface_count \(info.interfaceCount) > 32")
        case .filterFilter(let f) where f.rules.utf8.contains(0):
            throw .invalidField(type, "NUL inside the rules string")
        case .startBulkReceiving(let s):
            if s.bytesPerTransfer > UInt32(USBRedirLimits.maxDataLength) {
                throw .dataTooLong(type, length: UInt64(s.bytesPerTransfer), limit: USBRedirLimits.maxDataLength)
            }
            try requireInEndpoint(s.endpoint, type)
        // Interrupt receiving exists for IN endpoints only (the C parser checks all three).
        case .startInterruptReceiving(let s): try requireInEndpoint(s.endpoint, type)
        case .stopInterruptReceiving(let s): try requireInEndpoint(s.endpoint, type)
        case .interruptReceivingStatus(let s): try requireInEndpoint(s.endpoint, type)
        case .stopBulkReceiving(let s): try requireInEndpoint(s.endpoint, type)
        case .bulkReceivingStatus(let s): try requireInEndpoint(s.endpoint, type)
        default: break
        }
        guard let t = transfer(of: message) else { return }
        if t.length > UInt64(USBRedirLimits.maxDataLength) {
            throw .dataTooLong(type, length: t.length, limit: USBRedirLimits.maxDataLength)
        }
        let dataLength = t.data?.readableBytes ?? 0
        if expectsData(endpoint: t.endpoint, sender: sender) {
            if UInt64(dataLength) != t.length {
                throw .dataLengthMismatch(type, declared: UInt32(truncatingIfNeeded: t.length), actual: dataLength)
            }
            return
        }
        if dataLength != 0 { throw .unexpectedData(type, dataLength: dataLength) }
        switch type {
        case .isoPacket, .bufferedBulkPacket:
            throw .wrongDirection(type, sender: sender)
        case .interruptPacket where sender == .guest:
            throw .wrongDirection(type, sender: sender)
        default: break
        }
    }

    private static func requireInEndpoint(_ ep: UInt8, _ type: USBRedirMessageType) throws(USBRedirProtocolError) {
        if ep & 0x80 == 0 { throw .invalidField(type, "endpoint 0x\(String(ep, radix: 16)) is not an IN endpoint") }
    }
}
