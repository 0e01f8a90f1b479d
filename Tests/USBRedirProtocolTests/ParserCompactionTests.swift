import NIOCore
import Testing
@testable import USBRedirProtocol

/// The parser moves unread bytes to the front of its buffer only when that
/// pays: compacting after every packet copied the rest of the read each
/// time, quadratic when one read holds many packets (issue #9).
@Suite("Parser compaction")
struct ParserCompactionTests {
    static let count = 10_000

    static func stream() throws -> ByteBuffer {
        let n = USBRedirNegotiation(role: .host, ours: .all, peer: .all)
        let packets = (0..<count).map { i in
            USBRedirPacket(id: UInt64(i), .bulkPacket(.init(endpoint: 0x81, status: 0, length: 16, streamID: 0,
                                                            data: ByteBuffer(repeating: UInt8(i & 0xff), count: 16))))
        }
        return try ByteBuffer.usbRedirStream(packets, n)
    }

    @Test("one read holding 10,000 packets: all parsed, the buffer compacted a few times at most")
    func oneLargeRead() throws {
        var p = try ParserRobustnessTests.parser(.guest)
        p.append(try Self.stream())
        var got = 0
        while let packet = try p.nextPacket() {
            #expect(packet.id == UInt64(got))
            got += 1
        }
        #expect(got == Self.count)
        #expect(p.bufferedByteCount == 0)
        #expect(p.compactions <= 2, "compacted \(p.compactions) times")
    }

    @Test("socket-sized chunks that split packets: compactions stay far below one per packet")
    func splitReads() throws {
        var p = try ParserRobustnessTests.parser(.guest)
        var bytes = try Self.stream()
        var got = 0
        while bytes.readableBytes > 0 {
            p.append(bytes.readSlice(length: min(bytes.readableBytes, 4093))!)
            while let packet = try p.nextPacket() {
                #expect(packet.id == UInt64(got))
                got += 1
            }
            #expect(p.bufferedByteCount <= USBRedirParser.maxBufferedBytes)
        }
        #expect(got == Self.count)
        #expect(p.compactions < Self.count / 20, "compacted \(p.compactions) times for \(Self.count) packets")
    }
}
