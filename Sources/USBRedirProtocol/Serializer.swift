import NIOCore

extension ByteBuffer {
    /// Appends one packet as `negotiation.role` sends it. Payloads are written
    /// straight from their own buffers (one copy, into this one).
    /// Throws for a packet this role may not send or that cannot be represented.
    public mutating func writeUSBRedirPacket(
        _ packet: USBRedirPacket, negotiation: USBRedirNegotiation
    ) throws(USBRedirProtocolError) {
        if let data = try writeUSBRedirPacketHeader(packet, negotiation: negotiation) { writeImmutableBuffer(data) }
    }

    /// Appends the packet without its payload and returns the payload (nil
    /// when it has none): a sender can write the two as separate slices
    /// instead of copying the payload behind the header. Same checks.
    public mutating func writeUSBRedirPacketHeader(
        _ packet: USBRedirPacket, negotiation: USBRedirNegotiation
    ) throws(USBRedirProtocolError) -> ByteBuffer? {
        let message = packet.message
        let type = message.type
        let layout = USBRedirMessageLayout.of(type)
        guard layout.canBeSent(by: negotiation.role) else {
            throw .wrongDirection(type, sender: negotiation.role)
        }
        if let cap = USBRedirMessageLayout.requiredCapability(type), !negotiation.isActive(cap) {
            throw .missingCapability(type, cap)
        }
        if case .bulkPacket(let b) = message, b.length > 0xffff, !negotiation.isActive(.bulkLength32Bit) {
            throw .invalidField(type, "length \(b.length) needs the 32-bit bulk length capability")
        }
        try USBRedirDataRules.validate(message, sender: negotiation.role)

        let headerLength = layout.headerLength(of: type, negotiation)
        let data = message.trailingData
        // hello always goes with a 32-bit id: the peer cannot know our caps yet.
        let wide = type != .hello && negotiation.isActive(.ids64Bit)
        if !wide && packet.id > UInt64(UInt32.max) { throw .idTooLarge(packet.id) }

        putLE(type.rawValue)
        putLE(UInt32(headerLength + (data?.readableBytes ?? 0)))
        if wide { putLE(packet.id) } else { putLE(UInt32(packet.id)) }
        encodeUSBRedirTypeHeader(message, headerLength: headerLength)
        return data
    }
}
