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
        // could overflow. (SpiceLinkHandler does the same steps on a pipeline.)
        let size = try SpiceWire.linkReplySize(header: try await reader.readExactly(16))
        let (result, auth) = try authentication(for: try SpiceWire.linkReply(try await reader.readExactly(size)))
        try await outbound.write(auth)
        try Self.checkLinkResult(try await reader.readExactly(4))
        return result
    }

    /// What the link reply says, and our answer to it: auth mechanism and
    /// encrypted ticket. Throws the server's link error.
    func authentication(for reply: SpiceWire.LinkReply) throws -> (Result, ByteBuffer) {
        if reply.error != 0 { throw Self.linkError(reply.error) }
        let common = reply.commonCaps.first ?? 0
        let result = Result(miniHeader: common & (1 << UInt32(Spice.CommonCap.miniHeader.rawValue)) != 0,
                            serverChannelCaps: reply.channelCaps)
        var auth = ByteBuffer()
        if common & (1 << UInt32(Spice.CommonCap.authSelection.rawValue)) != 0 {
            auth.writeInteger(UInt32(Spice.CommonCap.authSpice.rawValue), endianness: .little)
        }
        auth.writeBytes(try Self.encryptTicket(password, publicKeyDER: reply.publicKey))
        return (result, auth)
    }

    /// The 4-byte link result.
    static func checkLinkResult(_ bytes: ByteBuffer) throws {
        var b = bytes
        let code: UInt32 = b.readInteger(endianness: .little)!
        if code != 0 { throw linkError(code) }
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

/// The SPICE link of a usbredir channel on the channel's pipeline (the main
/// channel links with `SpiceLink.run`): sends the link message once active,
/// reads the reply (sizes checked by SpiceWire), answers with the ticket,
/// reads the result. On success `install` adds the handlers that follow
/// (after this one), bytes that came after the result go on to them, and
/// this handler removes itself; then `linked` succeeds. On failure `linked`
/// fails (a TransportError; a close before the end is `.closedByPeer`) and
/// the channel closes.
final class SpiceLinkHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case replyHeader
        case reply(size: Int)
        case result(SpiceLink.Result)
        case done
    }

    private let link: SpiceLink
    private let linked: EventLoopPromise<SpiceLink.Result>
    private let install: (ChannelHandlerContext, SpiceLink.Result) throws -> Void
    private var state = State.replyHeader
    private var buffer = ByteBuffer()
    private var sent = false

    init(link: SpiceLink, linked: EventLoopPromise<SpiceLink.Result>,
         install: @escaping (ChannelHandlerContext, SpiceLink.Result) throws -> Void) {
        self.link = link
        self.linked = linked
        self.install = install
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { sendLink(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        sendLink(context)
        context.fireChannelActive()
    }

    private func sendLink(_ context: ChannelHandlerContext) {
        guard !sent else { return }
        sent = true
        context.writeAndFlush(wrapOutboundOut(link.linkMessage()), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .done = state { return }
        var chunk = unwrapInboundIn(data)
        buffer.writeBuffer(&chunk)
        do {
            try advance(context)
        } catch {
            fail(context, error.asTransportError)
        }
    }

    private func advance(_ context: ChannelHandlerContext) throws {
        while true {
            switch state {
            case .replyHeader:
                guard let header = buffer.readSlice(length: 16) else { return }
                state = .reply(size: try SpiceWire.linkReplySize(header: header))
            case .reply(let size):
                guard let body = buffer.readSlice(length: size) else { return }
                let (result, auth) = try link.authentication(for: try SpiceWire.linkReply(body))
                context.writeAndFlush(wrapOutboundOut(auth), promise: nil)
                state = .result(result)
            case .result(let result):
                guard let code = buffer.readSlice(length: 4) else { return }
                try SpiceLink.checkLinkResult(code)
                try install(context, result)
                state = .done
                let rest = buffer
                buffer = ByteBuffer()
                if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                linked.succeed(result)
                return
            case .done:
                return
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(context, error.asTransportError)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(context, .closedByPeer)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if case .done = state { return }
        state = .done
        linked.fail(TransportError.closedByPeer)
    }

    private func fail(_ context: ChannelHandlerContext, _ error: TransportError) {
        if case .done = state { return }
        state = .done
        buffer = ByteBuffer()
        linked.fail(error)
        context.close(promise: nil)
    }
}
