import Devices
import Foundation
import NIOCore
import Testing

// The virtual stick driven directly with Bulk-Only Transport packets, as a
// guest would send them: CBW on bulk OUT, data, CSW on bulk IN. A hostile
// guest controls every CDB field; none of them may crash the process.

/// Drives a MassStorageDevice one BOT command at a time.
struct StickDriver {
    let device: MassStorageDevice
    private(set) var tag: UInt32 = 0

    struct Status: Equatable {
        var tag: UInt32
        var residue: UInt32
        /// 0 passed, 1 failed, 2 phase error.
        var status: UInt8
    }

    static func cbw(tag: UInt32, dataLength: UInt32, isIn: Bool, _ cdb: [UInt8]) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(UInt32(0x4342_5355), endianness: .little)
        b.writeInteger(tag, endianness: .little)
        b.writeInteger(dataLength, endianness: .little)
        b.writeInteger(UInt8(isIn ? 0x80 : 0))
        b.writeInteger(UInt8(0))
        b.writeInteger(UInt8(cdb.count))
        b.writeBytes(cdb + Array(repeating: 0, count: 16 - cdb.count))
        return b
    }

    /// Runs one command: CBW, the data phase (IN: reads up to `dataLength`;
    /// OUT: sends `outData`), then the CSW. Returns the IN data and the status.
    mutating func command(_ cdb: [UInt8], dataLength: UInt32 = 0, isIn: Bool = true,
                          outData: [UInt8] = []) async throws -> (data: [UInt8], csw: Status) {
        tag &+= 1
        let sent = await device.transfer(endpoint: MassStorageDevice.bulkOut, length: 31,
                                         data: Self.cbw(tag: tag, dataLength: dataLength, isIn: isIn, cdb), streamID: 0)
        #expect(sent.status == .success, "CBW not accepted: \(sent.status)")
        var data: [UInt8] = []
        if dataLength > 0 {
            if isIn {
                let r = await device.transfer(endpoint: MassStorageDevice.bulkIn, length: Int(dataLength), data: nil, streamID: 0)
                #expect(r.status == .success, "data IN: \(r.status)")
                data = byteArray(r.data)
            } else {
                var payload = outData
                if payload.count < Int(dataLength) { payload += Array(repeating: 0, count: Int(dataLength) - payload.count) }
                let r = await device.transfer(endpoint: MassStorageDevice.bulkOut, length: payload.count,
                                              data: ByteBuffer(bytes: payload), streamID: 0)
                #expect(r.status == .success, "data OUT: \(r.status)")
            }
        }
        let c = await device.transfer(endpoint: MassStorageDevice.bulkIn, length: 13, data: nil, streamID: 0)
        var b = try #require(c.data, "no CSW: \(c.status)")
        #expect(b.readableBytes == 13)
        #expect(b.readInteger(endianness: .little, as: UInt32.self) == 0x5342_5355)
        let status = Status(tag: b.readInteger(endianness: .little)!, residue: b.readInteger(endianness: .little)!,
                            status: b.readInteger()!)
        #expect(status.tag == tag)
        return (data, status)
    }

    /// REQUEST SENSE: (key, asc, ascq) of the last failure.
    mutating func sense() async throws -> (UInt8, UInt8, UInt8) {
        let (d, csw) = try await command([0x03, 0, 0, 0, 18, 0], dataLength: 18)
        #expect(csw.status == 0)
        guard d.count >= 14 else { return (0xff, 0xff, 0xff) }
        return (d[2] & 0x0f, d[12], d[13])
    }
}

func makeStickImage(blocks: Int, fill: UInt8 = 0) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usbredir-harden-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let path = dir.appendingPathComponent("stick.img").path
    try Data(repeating: fill, count: blocks * 512).write(to: URL(fileURLWithPath: path))
    return path
}

func be(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64(n - 1 - $0))) } }

@Suite("MassStorageHardeningTests")
struct MassStorageHardeningTests {
    static let lbaOutOfRange: (UInt8, UInt8, UInt8) = (0x05, 0x21, 0)
    static let invalidField: (UInt8, UInt8, UInt8) = (0x05, 0x24, 0)

    func stick(blocks: Int = 64, readOnly: Bool = false) throws -> StickDriver {
        StickDriver(device: try MassStorageDevice(imagePath: try makeStickImage(blocks: blocks), readOnly: readOnly,
                                                  serial: "HARDEN"))
    }

    @Test func verify16WithAnLBANearTheTopOfTheRangeFailsCleanly() async throws {
        var s = try stick()
        // LBA 2^64-1, 2 blocks: lba + count wraps. Before the fix: overflow trap.
        let (_, csw) = try await s.command([0x8f, 0] + be(UInt64.max, 8) + be(2, 4) + [0, 0])
        #expect(csw.status == 1)
        #expect(try await s.sense() == Self.lbaOutOfRange)
        // And a VERIFY(16) with a huge count from LBA 1.
        let (_, csw2) = try await s.command([0x8f, 0] + be(1, 8) + be(0xffff_ffff, 4) + [0, 0])
        #expect(csw2.status == 1)
        #expect(try await s.sense() == Self.lbaOutOfRange)
        // A valid one still passes.
        let (_, ok) = try await s.command([0x8f, 0] + be(0, 8) + be(64, 4) + [0, 0])
        #expect(ok.status == 0)
    }

    @Test func write16WithAnLBANearTheTopOfTheRangeFailsCleanly() async throws {
        var s = try stick()
        for lba in [UInt64.max, UInt64.max - 1, UInt64.max / 512, 1 << 63] {
            let (_, csw) = try await s.command([0x8a, 0] + be(lba, 8) + be(2, 4) + [0, 0], dataLength: 1024,
                                               isIn: false)
            #expect(csw.status == 1, "WRITE(16) at LBA \(lba)")
            #expect(try await s.sense() == Self.lbaOutOfRange, "WRITE(16) at LBA \(lba)")
        }
        // READ(16) the same way (READ already checked this; kept so it stays so).
        let (_, csw) = try await s.command([0x88, 0] + be(UInt64.max, 8) + be(2, 4) + [0, 0], dataLength: 1024)
        #expect(csw.status == 1)
        #expect(try await s.sense() == Self.lbaOutOfRange)
    }

    @Test func every10ByteAnd16ByteRangeIsCheckedAgainstTheMedium() async throws {
        var s = try stick(blocks: 64)
        // READ(10), WRITE(10), VERIFY(10) one block past the end.
        for (op, isIn) in [(UInt8(0x28), true), (0x2a, false)] {
            let (_, csw) = try await s.command([op, 0] + be(63, 4) + [0] + be(2, 2) + [0], dataLength: 1024, isIn: isIn)
            #expect(csw.status == 1, "opcode \(op)")
            #expect(try await s.sense() == Self.lbaOutOfRange)
            let (_, csw2) = try await s.command([op, 0] + be(0xffff_ffff, 4) + [0] + be(0xffff, 2) + [0],
                                                dataLength: 512, isIn: isIn)
            #expect(csw2.status == 1, "opcode \(op)")
        }
        let (_, v10) = try await s.command([0x2f, 0] + be(0xffff_ffff, 4) + [0] + be(0xffff, 2) + [0])
        #expect(v10.status == 1)
        #expect(try await s.sense() == Self.lbaOutOfRange)
        // READ(16) / WRITE(16) with a transfer length beyond what one command may move.
        let (_, r16) = try await s.command([0x88, 0] + be(0, 8) + be(0xffff_ffff, 4) + [0, 0], dataLength: 512)
        #expect(r16.status == 1)
        let (_, w16) = try await s.command([0x8a, 0] + be(0, 8) + be(0x8000_0000, 4) + [0, 0], dataLength: 512,
                                           isIn: false)
        #expect(w16.status == 1)
        // WRITE(6) with count 0 (= 256 blocks) on a 64-block medium.
        let (_, w6) = try await s.command([0x0a, 0, 0, 0, 0, 0], dataLength: 512, isIn: false)
        #expect(w6.status == 1)
        #expect(try await s.sense() == Self.lbaOutOfRange)
    }

    @Test func transferLengthBeyondTheCBWDataLengthIsAPhaseErrorAndNothingIsWritten() async throws {
        let image = try makeStickImage(blocks: 64, fill: 0xaa)
        var s = StickDriver(device: try MassStorageDevice(imagePath: image, readOnly: false, serial: "HARDEN"))
        // WRITE(10) of 4 blocks but the CBW announces only 512 bytes.
        let (_, w) = try await s.command([0x2a, 0] + be(0, 4) + [0] + be(4, 2) + [0], dataLength: 512, isIn: false,
                                         outData: Array(repeating: 0x55, count: 512))
        #expect(w.status == 2)
        // READ(10) of 4 blocks with 512 expected: phase error, at most 512 bytes sent.
        let (d, r) = try await s.command([0x28, 0] + be(0, 4) + [0] + be(4, 2) + [0], dataLength: 512)
        #expect(r.status == 2)
        #expect(d.count <= 512)
        await s.device.close()
        let bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        #expect(bytes.allSatisfy { $0 == 0xaa }, "a phase-error WRITE reached the image")
    }

    @Test func allocationLengthsBoundWhatIsReturned() async throws {
        var s = try stick()
        // INQUIRY with allocation 5, CBW wants 36: 5 bytes, residue 31.
        let (d, csw) = try await s.command([0x12, 0, 0, 0, 5, 0], dataLength: 36)
        #expect(d.count == 5 && csw.status == 0 && csw.residue == 31)
        // READ CAPACITY(16) with allocation 0xffffffff but CBW 32: 32 bytes.
        let (d16, c16) = try await s.command([0x9e, 0x10] + be(0, 8) + be(0xffff_ffff, 4) + [0, 0], dataLength: 32)
        #expect(d16.count == 32 && c16.status == 0)
        // READ CAPACITY(16) with allocation 0xffffffff and CBW 8: phase error, not a crash.
        let (_, c8) = try await s.command([0x9e, 0x10] + be(0, 8) + be(0xffff_ffff, 4) + [0, 0], dataLength: 8)
        #expect(c8.status == 2)
        // MODE SENSE(10) allocation 0xffff, CBW 4.
        let (_, ms) = try await s.command([0x5a, 0, 0x3f, 0, 0, 0, 0, 0xff, 0xff, 0], dataLength: 4)
        #expect(ms.status == 2)
        // An unknown opcode: invalid command, not a crash.
        let (_, bad) = try await s.command([0xff], dataLength: 0)
        #expect(bad.status == 1)
    }
}

/// Found by the stick fuzz target (Fuzz/stick): regression tests.
@Suite("MassStorageFuzzRegressionTests")
struct MassStorageFuzzRegressionTests {
    /// A bulk IN shorter than the 13-byte CSW got all 13 bytes: more than the
    /// guest asked for (the harness's "bulk IN returned more than asked for"
    /// precondition, crash-ef5cc418dc18e553017b0b1cc931fe6f8920262d).
    @Test func aBulkInShorterThanTheCSWNeverGetsMoreThanItAskedFor() async throws {
        let device = try MassStorageDevice(imagePath: try makeStickImage(blocks: 8), readOnly: false, serial: "FUZZ")
        let cbw = StickDriver.cbw(tag: 9, dataLength: 0, isIn: false, [0x00, 0, 0, 0, 0, 0])   // TEST UNIT READY
        #expect(await device.transfer(endpoint: MassStorageDevice.bulkOut, length: 31, data: cbw, streamID: 0).status
                == .success)
        for length in [0, 4, 12] {
            let r = await device.transfer(endpoint: MassStorageDevice.bulkIn, length: length, data: nil, streamID: 0)
            #expect((r.data?.readableBytes ?? 0) <= length, "asked for \(length), got \(r.data?.readableBytes ?? 0)")
        }
        // The CSW is still there for a proper read.
        let csw = await device.transfer(endpoint: MassStorageDevice.bulkIn, length: 13, data: nil, streamID: 0)
        let bytes = byteArray(csw.data)
        #expect(bytes.count == 13 && bytes[4] == 9 && bytes[12] == 0, "\(bytes)")
    }
}
