// libFuzzer target: the usbredir parser (USBRedirProtocol), as both roles,
// fed in chunks, and the usbredir filter-string parser.
//
// Input: byte 0 = flags: bit 0 role we play (0 host: parse what a guest
// sends; 1 guest), bits 1-3 chunk size (1 << n bytes per append), bit 4 the
// rest is a filter string instead; the rest = the byte stream.
import NIOCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUSBRedir(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let flags = data[0]
    let bytes = UnsafeBufferPointer(start: data + 1, count: size - 1)
    if flags & 0x10 != 0 {
        _ = try? USBRedirFilter.parse(String(decoding: bytes, as: UTF8.self))
        return 0
    }
    let role: USBRedirRole = flags & 1 == 0 ? .host : .guest
    var parser = USBRedirParser(role: role, capabilities: .all)
    let chunk = 1 << Int((flags >> 1) & 7)
    var offset = 0
    var packets = 0
    while offset < bytes.count {
        let n = min(chunk, bytes.count - offset)
        parser.append(UnsafeBufferPointer(rebasing: bytes[offset..<(offset + n)]))
        offset += n
        do {
            while let _ = try parser.nextPacket() { packets += 1 }
        } catch {
            return 0
        }
        // The memory bound the parser promises.
        precondition(parser.bufferedByteCount <= USBRedirParser.maxBufferedBytes + chunk)
    }
    return 0
}
