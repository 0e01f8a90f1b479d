@testable import Devices
import Foundation
import NIOCore
import Testing

/// The stick reads the image on the bulk IN leg, as much as each IN transfer
/// asks for, and reads ahead for sequential access (issue #9): not the whole
/// command when its CBW arrives.
@Suite("MassStorageReadPathTests", .timeLimit(.minutes(1)))
struct MassStorageReadPathTests {
    static func cbwRead(_ device: MassStorageDevice, tag: UInt32, lba: UInt64, blocks: Int) async {
        let cbw = StickDriver.cbw(tag: tag, dataLength: UInt32(blocks * 512), isIn: true,
                                  [0x28, 0] + be(lba, 4) + [0] + be(UInt64(blocks), 2) + [0])
        #expect(await device.transfer(endpoint: MassStorageDevice.bulkOut, length: 31, data: cbw, streamID: 0).status
                == .success)
    }

    static func bulkIn(_ device: MassStorageDevice, _ length: Int) async -> [UInt8] {
        let r = await device.transfer(endpoint: MassStorageDevice.bulkIn, length: length, data: nil, streamID: 0)
        return r.data.map { Array($0.readableBytesView) } ?? []
    }

    static func overwrite(_ path: String, at offset: UInt64, _ bytes: [UInt8]) throws {
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try h.seek(toOffset: offset)
        try h.write(contentsOf: Data(bytes))
        try h.close()
    }

    @Test("the data phase is read when the host asks, in the pieces it asks for")
    func readOnTheInLeg() async throws {
        let image = try makeStickImage(blocks: 64, fill: 0xaa)
        let device = try MassStorageDevice(imagePath: image, readOnly: false, serial: "READPATH")
        await Self.cbwRead(device, tag: 1, lba: 0, blocks: 8)
        // Changed behind the device after the CBW: a read made at the CBW
        // would still return 0xaa.
        try Self.overwrite(image, at: 0, Array(repeating: 0x11, count: 4096))
        let first = await Self.bulkIn(device, 1024)
        #expect(first == Array(repeating: 0x11, count: 1024))
        let rest = await Self.bulkIn(device, 3072)
        #expect(rest == Array(repeating: 0x11, count: 3072))
        let csw = await Self.bulkIn(device, 13)
        // "USBS", tag 1, residue 0, status 0.
        #expect(csw == [0x55, 0x53, 0x42, 0x53, 1, 0, 0, 0, 0, 0, 0, 0, 0])
        await device.close()
    }

    @Test("a write between sequential reads is seen: the read ahead is dropped")
    func writeInvalidatesReadAhead() async throws {
        let image = try makeStickImage(blocks: 64, fill: 0xaa)
        var s = StickDriver(device: try MassStorageDevice(imagePath: image, readOnly: false, serial: "READAHEAD"))
        let read = [0x28, 0] + be(0, 4) + [0] + be(8, 2) + [0]
        let (d0, c0) = try await s.command(read, dataLength: 4096)
        #expect(d0 == Array(repeating: 0xaa, count: 4096) && c0.status == 0)
        // Blocks 8-15 are being read ahead now; the guest writes them.
        let (_, w) = try await s.command([0x2a, 0] + be(8, 4) + [0] + be(8, 2) + [0], dataLength: 4096, isIn: false,
                                         outData: Array(repeating: 0x5c, count: 4096))
        #expect(w.status == 0)
        let (d1, c1) = try await s.command([0x28, 0] + be(8, 4) + [0] + be(8, 2) + [0], dataLength: 4096)
        #expect(c1.status == 0)
        #expect(d1 == Array(repeating: 0x5c, count: 4096), "stale read-ahead bytes returned")
        // And a sequential read after that is served right (from the read ahead).
        let (d2, c2) = try await s.command([0x28, 0] + be(16, 4) + [0] + be(8, 2) + [0], dataLength: 4096)
        #expect(d2 == Array(repeating: 0xaa, count: 4096) && c2.status == 0)
        await s.device.close()
    }

    @Test("what is in memory is answered at once; image I/O still under way is not, and changes nothing")
    func answersAtOnceOnlyFromMemory() async throws {
        let image = try makeStickImage(blocks: 64, fill: 0xaa)
        let device = try MassStorageDevice(imagePath: image, readOnly: false, serial: "ATONCE")
        let inEP = MassStorageDevice.bulkIn, outEP = MassStorageDevice.bulkOut
        let read = StickDriver.cbw(tag: 7, dataLength: 4096, isIn: true, [0x28, 0] + be(0, 4) + [0] + be(8, 2) + [0])
        // The CBW is parsed in memory.
        let cbw = Submitted.bulk(device, outEP, length: 31, data: read)
        #expect(cbw.atOnce)
        #expect(await cbw.probe.value.status == .success)
        // No read ahead yet for the first chunk: not at once; it completes
        // when the read lands, with the data phase's first bytes.
        let first = Submitted.bulk(device, inEP, length: 1024)
        #expect(!first.atOnce)
        #expect(await first.bytes == Array(repeating: 0xaa, count: 1024))
        // The next chunk is read ahead; once it has landed it is served at once.
        try await eventually("the read ahead lands") { device.readAheadLanded }
        let chunk = Submitted.bulk(device, inEP, length: 1024)
        #expect(chunk.atOnce)
        #expect(await chunk.bytes == Array(repeating: 0xaa, count: 1024))
        #expect(await Self.bulkIn(device, 2048) == Array(repeating: 0xaa, count: 2048))
        // The CSW is in memory: "USBS", tag 7, residue 0, status 0.
        let csw = Submitted.bulk(device, inEP, length: 13)
        #expect(csw.atOnce)
        #expect(await csw.bytes == [0x55, 0x53, 0x42, 0x53, 7, 0, 0, 0, 0, 0, 0, 0, 0])
        // SYNCHRONIZE CACHE fsyncs the image: not at once (its CBW completes after the flush).
        let sync = StickDriver.cbw(tag: 9, dataLength: 0, isIn: false, [0x35] + Array(repeating: 0, count: 9))
        let flush = Submitted.bulk(device, outEP, length: 31, data: sync)
        #expect(!flush.atOnce)
        #expect(await flush.probe.value.status == .success)
        #expect(await Self.bulkIn(device, 13) == [0x55, 0x53, 0x42, 0x53, 9, 0, 0, 0, 0, 0, 0, 0, 0])
        // A write's data goes to the image: never at once.
        let write = StickDriver.cbw(tag: 8, dataLength: 512, isIn: false, [0x2a, 0] + be(0, 4) + [0] + be(1, 2) + [0])
        let writeCBW = Submitted.bulk(device, outEP, length: 31, data: write)
        #expect(writeCBW.atOnce)
        #expect(await writeCBW.probe.value.status == .success)
        let data = Submitted.bulk(device, outEP, length: 512, data: ByteBuffer(repeating: 0x33, count: 512))
        #expect(!data.atOnce)
        #expect(await data.probe.value == .outDone(512))
        await device.close()
    }
}
