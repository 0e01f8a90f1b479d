// libFuzzer target: what a SPICE server sends before and after the link
// (Transport): the link header and reply with its caps, message headers
// (mini and full), COMPRESSED_DATA (LZ4), CHANNELS_LIST and NOTIFY text.
//
// Input: byte 0 selects the parser, the rest is its input.
import NIOCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSpice(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let body = ByteBuffer(bytes: UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch data[0] % 6 {
    case 0:
        // Header then reply, as SpiceLink.run reads them.
        guard let header = body.getSlice(at: body.readerIndex, length: min(16, body.readableBytes)),
              let size = try? SpiceWire.linkReplySize(header: header) else { return 0 }
        var rest = body
        rest.moveReaderIndex(forwardBy: header.readableBytes)
        guard let reply = rest.readSlice(length: min(size, rest.readableBytes)) else { return 0 }
        if let r = try? SpiceWire.linkReply(reply), r.error == 0 {
            precondition(r.publicKey.count == Spice.ticketPubkeyBytes)
            precondition(r.commonCaps.count <= SpiceWire.maxCapsWords && r.channelCaps.count <= SpiceWire.maxCapsWords)
        }
    case 1:
        _ = try? SpiceWire.linkReply(body)
    case 2:
        if let (_, size) = try? SpiceWire.messageHeader(body, miniHeader: data[0] & 0x80 != 0) {
            precondition(size >= 0 && size <= Spice.maxMessageSize)
        }
    case 3:
        if let out = try? SpiceWire.compressedData(body) { precondition(out.readableBytes <= Spice.maxMessageSize) }
    case 4:
        _ = try? SpiceWire.usbredirChannels(body)
    default:
        _ = SpiceChannelReader.notifyText(body)
    }
    return 0
}
