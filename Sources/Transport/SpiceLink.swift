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
        do {
            try await outbound.write(linkMessage())
        } catch {
            // A write on a connection that already failed says only "closed";
            // why (a TLS handshake the CA refused, say) waits on the inbound
            // side, so read it from there.
            _ = try await reader.readExactly(1)
            throw error
        }
        // Every count, size and offset below is the server's, read before
        // any authentication: SpiceWire checks them without arithmetic that
        // could overflow.
        let size = try SpiceWire.linkReplySize(header: try await reader.readExactly(16))
        let reply = try SpiceWire.linkReply(try await reader.readExactly(size))
        if reply.error != 0 { throw Self.linkError(reply.error) }
        let pubkey = reply.publicKey
        let common = reply.commonCaps.first ?? 0
        let result = Result(miniHeader: common & (1 << UInt32(Spice.CommonCap.miniHeader.rawValue)) != 0,
                            serverChannelCaps: reply.channelCaps)

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
