import NIOCore
import _CryptoExtras

/// The SPICE link handshake of one channel: link message, server reply with
/// its RSA key and caps, auth selection, encrypted ticket, link result.
struct SpiceLink {
    struct Result {
        var miniHeader: Bool
        var serverChannelCaps: [UInt32]

        func serverHasChannelCap(_ bit: Int) -> Bool {
            let word = bit / 32
            return word < serverChannelCaps.count && serverChannelCaps[word] & (1 << UInt32(bit % 32)) != 0
        }
    }

    var connectionID: UInt32
    var channelType: Spice.ChannelType
    var channelID: UInt8
    var channelCaps: [UInt32]
    var password: String

    static let commonCaps: UInt32 =
        1 << UInt32(Spice.CommonCap.authSelection.rawValue)
        | 1 << UInt32(Spice.CommonCap.authSpice.rawValue)
        | 1 << UInt32(Spice.CommonCap.miniHeader.rawValue)

    func linkMessage() -> ByteBuffer {
        var b = ByteBuffer()
        let caps = [Self.commonCaps] + channelCaps
        let messSize = 18 + 4 * caps.count
        b.writeInteger(Spice.magic, endianness: .little)
        b.writeInteger(Spice.majorVersion, endianness: .little)
        b.writeInteger(Spice.minorVersion, endianness: .little)
        b.writeInteger(UInt32(messSize), endianness: .little)
        b.writeInteger(connectionID, endianness: .little)
        b.writeInteger(channelType.rawValue)
        b.writeInteger(channelID)
        b.writeInteger(UInt32(1), endianness: .little)                 // common caps words
        b.writeInteger(UInt32(channelCaps.count), endianness: .little) // channel caps words
        b.writeInteger(UInt32(18), endianness: .little)                // caps offset
        for c in caps { b.writeInteger(c, endianness: .little) }
        return b
    }

    func run(reader: ConnectionReader, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws -> Result {
        try await outbound.write(linkMessage())
        var header = try await reader.readExactly(16)
        let magic: UInt32 = header.readInteger(endianness: .little)!
        let major: UInt32 = header.readInteger(endianness: .little)!
        _ = header.readInteger(endianness: .little, as: UInt32.self)
        let size: UInt32 = header.readInteger(endianness: .little)!
        guard magic == Spice.magic else { throw TransportError.notSpice("bad magic 0x\(String(magic, radix: 16))") }
        guard major == Spice.majorVersion else { throw TransportError.notSpice("protocol version \(major)") }
        guard size >= 4 + UInt32(Spice.ticketPubkeyBytes) + 12, size <= Spice.maxLinkReplySize else {
            throw TransportError.notSpice("link reply of \(size) bytes")
        }
        var reply = try await reader.readExactly(Int(size))
        let body = reply
        let error: UInt32 = reply.readInteger(endianness: .little)!
        if error != 0 { throw Self.linkError(error) }
        let pubkey = reply.readBytes(length: Spice.ticketPubkeyBytes)!
        let commonCount: UInt32 = reply.readInteger(endianness: .little)!
        let channelCount: UInt32 = reply.readInteger(endianness: .little)!
        let capsOffset: UInt32 = reply.readInteger(endianness: .little)!
        guard let caps = Self.readCaps(body, offset: Int(capsOffset), count: Int(commonCount + channelCount)),
              commonCount >= 1 || channelCount == 0 else {
            throw TransportError.notSpice("malformed caps in link reply")
        }
        let common = commonCount > 0 ? caps[0] : 0
        let result = Result(miniHeader: common & (1 << UInt32(Spice.CommonCap.miniHeader.rawValue)) != 0,
                            serverChannelCaps: Array(caps.dropFirst(Int(commonCount))))

        var auth = ByteBuffer()
        if common & (1 << UInt32(Spice.CommonCap.authSelection.rawValue)) != 0 {
            auth.writeInteger(UInt32(Spice.CommonCap.authSpice.rawValue), endianness: .little)
        }
        auth.writeBytes(try Self.encryptTicket(password, publicKeyDER: pubkey))
        try await outbound.write(auth)
        var linkResult = try await reader.readExactly(4)
        let code: UInt32 = linkResult.readInteger(endianness: .little)!
        if code != 0 { throw Self.linkError(code) }
        return result
    }

    static func readCaps(_ body: ByteBuffer, offset: Int, count: Int) -> [UInt32]? {
        guard count <= 64, offset >= 0, offset + 4 * count <= body.readableBytes else { return nil }
        return (0..<count).map { body.getInteger(at: body.readerIndex + offset + 4 * $0, endianness: .little)! }
    }

    /// RSA-OAEP (SHA-1) of the password and its NUL, with the server's key.
    static func encryptTicket(_ password: String, publicKeyDER: [UInt8]) throws -> [UInt8] {
        guard password.utf8.count <= Spice.maxPasswordLength else {
            throw TransportError.configuration("SPICE passwords are at most \(Spice.maxPasswordLength) bytes")
        }
        do {
            // The server's key is RSA-1024, which the checked initializer refuses.
            let key = try _RSA.Encryption.PublicKey(unsafeDERRepresentation: publicKeyDER)
            let ticket = Array(password.utf8) + [0]
            return Array(try key.encrypt(ticket, padding: .PKCS1_OAEP))
        } catch {
            throw TransportError.notSpice("unusable server key: \(error)")
        }
    }

    static func linkError(_ code: UInt32) -> TransportError {
        switch Spice.LinkError(rawValue: code) {
        case .permissionDenied: return .wrongPassword
        case .badConnectionID: return .linkRefused(code: code, "bad connection id (the SPICE session ended)")
        case .channelNotAvailable: return .linkRefused(code: code, "channel not available")
        case .needSecured: return .linkRefused(code: code, "the server requires TLS (use spice-tls)")
        case .needUnsecured: return .linkRefused(code: code, "the server requires a plain connection")
        case .versionMismatch: return .notSpice("version mismatch")
        default: return .linkRefused(code: code, "link error")
        }
    }
}
