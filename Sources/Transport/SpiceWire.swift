import NIOCore

/// Parsing of what a SPICE server sends, apart from the I/O, so that every
/// count and size the peer controls is checked in one place before it is
/// used in arithmetic or as a length (and can be fuzzed: Fuzz/spice).
/// Nothing here traps on any input: sizes are compared, never added.
enum SpiceWire {
    /// Caps words we accept per list (spice-server sends 1 common, 1 channel).
    static let maxCapsWords = 32
    /// The fixed part of a SpiceLinkReply: error, public key, three u32.
    static let linkReplyFixedBytes = 4 + Spice.ticketPubkeyBytes + 12

    /// The size of the link reply body, from the 16-byte SpiceLinkHeader.
    static func linkReplySize(header: ByteBuffer) throws -> Int {
        var h = header
        guard let magic = h.readInteger(endianness: .little, as: UInt32.self),
              let major = h.readInteger(endianness: .little, as: UInt32.self),
              let _ = h.readInteger(endianness: .little, as: UInt32.self),
              let size = h.readInteger(endianness: .little, as: UInt32.self) else {
            throw TransportError.notSpice("short link header")
        }
        guard magic == Spice.magic else { throw TransportError.notSpice("bad magic 0x\(String(magic, radix: 16))") }
        guard major == Spice.majorVersion else { throw TransportError.notSpice("protocol version \(major)") }
        guard size >= UInt32(linkReplyFixedBytes), size <= UInt32(Spice.maxLinkReplySize) else {
            throw TransportError.notSpice("link reply of \(size) bytes")
        }
        return Int(size)
    }

    struct LinkReply: Equatable {
        var error: UInt32
        var publicKey: [UInt8]
        var commonCaps: [UInt32]
        var channelCaps: [UInt32]
    }

    /// A SpiceLinkReply body. A non-zero error comes back as it is (the
    /// caller maps it); caps must lie inside the body.
    static func linkReply(_ body: ByteBuffer) throws -> LinkReply {
        var reply = body
        guard reply.readableBytes >= linkReplyFixedBytes,
              let error = reply.readInteger(endianness: .little, as: UInt32.self),
              let publicKey = reply.readBytes(length: Spice.ticketPubkeyBytes),
              let commonCount = reply.readInteger(endianness: .little, as: UInt32.self),
              let channelCount = reply.readInteger(endianness: .little, as: UInt32.self),
              let capsOffset = reply.readInteger(endianness: .little, as: UInt32.self) else {
            throw TransportError.notSpice("link reply of \(body.readableBytes) bytes")
        }
        if error != 0 { return LinkReply(error: error, publicKey: [], commonCaps: [], channelCaps: []) }
        guard commonCount >= 1 || channelCount == 0,
              let common = caps(body, offset: capsOffset, count: commonCount, skipping: 0),
              let channel = caps(body, offset: capsOffset, count: channelCount, skipping: commonCount) else {
            throw TransportError.notSpice("malformed caps in link reply")
        }
        return LinkReply(error: 0, publicKey: publicKey, commonCaps: common, channelCaps: channel)
    }

    /// `count` u32 words at `offset` + 4 * `skipping` from the body's start,
    /// or nil when they do not lie inside it. Every value is the peer's.
    static func caps(_ body: ByteBuffer, offset: UInt32, count: UInt32, skipping: UInt32) -> [UInt32]? {
        guard count <= UInt32(maxCapsWords), skipping <= UInt32(maxCapsWords),
              offset <= UInt32(body.readableBytes) else { return nil }
        let start = Int(offset) + 4 * Int(skipping), bytes = 4 * Int(count)
        guard start <= body.readableBytes, bytes <= body.readableBytes - start else { return nil }
        return (0..<Int(count)).map { body.getInteger(at: body.readerIndex + start + 4 * $0, endianness: .little)! }
    }

    /// Type and body size from a message header (mini: u16 type, u32 size;
    /// full: u64 serial, u16 type, u32 size, u32 sub-list).
    static func messageHeader(_ header: ByteBuffer, miniHeader: Bool) throws -> (type: UInt16, size: Int) {
        var h = header
        if !miniHeader {
            guard h.readableBytes >= 18 else { throw TransportError.protocolViolation("short SPICE header") }
            h.moveReaderIndex(forwardBy: 8)   // serial
        }
        guard let type = h.readInteger(endianness: .little, as: UInt16.self),
              let size = h.readInteger(endianness: .little, as: UInt32.self) else {
            throw TransportError.protocolViolation("short SPICE header")
        }
        guard size <= UInt32(Spice.maxMessageSize) else {
            throw TransportError.protocolViolation("SPICE message \(type) of \(size) bytes exceeds the limit")
        }
        return (type, Int(size))
    }

    /// SPICEVMC_COMPRESSED_DATA: u8 type, u32 uncompressed size, LZ4 block.
    static func compressedData(_ body: ByteBuffer) throws -> ByteBuffer {
        var b = body
        guard let kind = b.readInteger(as: UInt8.self),
              let size = b.readInteger(endianness: .little, as: UInt32.self) else {
            throw TransportError.protocolViolation("short COMPRESSED_DATA")
        }
        guard kind == Spice.vmcCompressionLZ4 else {
            throw TransportError.protocolViolation("unknown compression type \(kind)")
        }
        guard size <= UInt32(Spice.maxMessageSize) else {
            throw TransportError.protocolViolation("LZ4 frame claims \(size) bytes")
        }
        return try LZ4.decompress(b, size: Int(size))
    }

    /// MAIN_CHANNELS_LIST: u32 count, then (u8 type, u8 id) pairs; the
    /// usbredir channel ids, ascending.
    static func usbredirChannels(_ body: ByteBuffer) throws -> [UInt8] {
        var b = body
        guard let count = b.readInteger(endianness: .little, as: UInt32.self),
              UInt64(count) * 2 <= UInt64(b.readableBytes) else {
            throw TransportError.protocolViolation("malformed CHANNELS_LIST")
        }
        var ids: [UInt8] = []
        for _ in 0..<count {
            let type = b.readInteger(as: UInt8.self)!
            let id = b.readInteger(as: UInt8.self)!
            if type == Spice.ChannelType.usbredir.rawValue { ids.append(id) }
        }
        return ids.sorted()
    }
}
