import Devices
import Foundation
import NIOCore
import Session
import Testing
import TestSupport
import USBRedirProtocol

// The virtual stick's Bulk-Only Transport, driven over usbredir by the
// usb-guest peer (GuestPeer) the way a guest's usb-storage driver drives it.
// A Linux guest never sends a WRITE to a disk the stick reports as
// write-protected (the kernel refuses the open first), so only a peer like
// this one shows what the stick does with one.

/// A Command Block Wrapper (USB MSC BOT 1.0, 5.1): 31 bytes, "USBC".
func commandBlockWrapper(tag: UInt32, dataLength: UInt32, isIn: Bool, _ cdb: [UInt8]) -> ByteBuffer {
    var b = ByteBuffer()
    b.writeInteger(UInt32(0x4342_5355), endianness: .little)
    b.writeInteger(tag, endianness: .little)
    b.writeInteger(dataLength, endianness: .little)
    b.writeInteger(UInt8(isIn ? 0x80 : 0))
    b.writeInteger(UInt8(0))                         // LUN
    b.writeInteger(UInt8(cdb.count))
    b.writeBytes(cdb + [UInt8](repeating: 0, count: 16 - cdb.count))
    return b
}

/// A Command Status Wrapper (BOT 5.2), parsed from 13 bytes.
struct CommandStatus: Equatable, CustomStringConvertible {
    var signature: UInt32
    var tag: UInt32
    var residue: UInt32
    var status: UInt8

    init?(_ data: ByteBuffer?) {
        guard var b = data, b.readableBytes == 13,
              let signature = b.readInteger(endianness: .little, as: UInt32.self),
              let tag = b.readInteger(endianness: .little, as: UInt32.self),
              let residue = b.readInteger(endianness: .little, as: UInt32.self),
              let status = b.readInteger(as: UInt8.self) else { return nil }
        self.signature = signature
        self.tag = tag
        self.residue = residue
        self.status = status
    }

    var description: String { "CSW(tag \(tag), residue \(residue), status \(status))" }
}

@Suite("MassStorageProtocolTests", .timeLimit(.minutes(1)))
struct MassStorageProtocolTests {
    static let success = USBRedirStatus.success.rawValue
    static let writeCDB: [UInt8] = [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]     // WRITE(10): LBA 0, one block
    static let requestSenseCDB: [UInt8] = [0x03, 0, 0, 0, 18, 0]       // REQUEST SENSE, 18 bytes

    /// A stick on a fresh 1 MiB random image, configured, behind a GuestPeer.
    static func stick(readOnly: Bool) async throws -> (Rig, image: String) {
        let dir = try makeTemporaryDirectory("usbredir-msc")
        let image = try makeRandomImage(mib: 1, in: dir)
        let (rig, hs) = try await Rig.connected(try MassStorageDevice(imagePath: image, readOnly: readOnly, serial: "MSC0001"))
        #expect(hs.deviceConnect?.vendorID == 0x0525 && hs.deviceConnect?.productID == 0xa4a5)
        try await rig.peer.send(.setConfiguration(.init(configuration: 1)), id: 900)
        let configured = try await rig.peer.take(.configurationStatus, id: 900)
        guard case .configurationStatus(let c) = configured.packet.message else { throw PeerError(description: "not configuration_status") }
        #expect(c.status == success && c.configuration == 1)
        return (rig, image)
    }

    /// One WRITE(10) of block 0 as the guest sends it: CBW, 512 bytes of
    /// data, then the CSW.
    static func writeBlockZero(_ peer: GuestPeer, tag: UInt32, fill: UInt8) async throws -> CommandStatus {
        let cbw = try await peer.bulkOut(endpoint: 0x02, data: commandBlockWrapper(tag: tag, dataLength: 512, isIn: false, writeCDB),
                                         id: UInt64(tag) << 8)
        #expect(cbw.status == success && cbw.length == 31, "the CBW is taken whole")
        let data = try await peer.bulkOut(endpoint: 0x02, data: ByteBuffer(repeating: fill, count: 512), id: UInt64(tag) << 8 | 1)
        #expect(data.status == success && data.length == 512, "the data phase is consumed (BOT 6.7.3: the device may discard it)")
        let csw = try await peer.bulkIn(endpoint: 0x81, length: 13, id: UInt64(tag) << 8 | 2)
        #expect(csw.status == success)
        return try #require(CommandStatus(csw.data), "no 13-byte CSW: \(byteArray(csw.data))")
    }

    static func firstBlock(of image: String) throws -> [UInt8] {
        let handle = try #require(FileHandle(forReadingAtPath: image))
        defer { try? handle.close() }
        return [UInt8](try handle.read(upToCount: 512) ?? Data())
    }

    @Test func aWriteToAReadOnlyStickFailsWithDataProtectSense() async throws {
        let (rig, image) = try await Self.stick(readOnly: true)
        let peer = rig.peer
        let before = try Self.firstBlock(of: image)

        // WRITE(10): CHECK CONDITION, i.e. CSW status 1 ("command failed").
        let csw = try await Self.writeBlockZero(peer, tag: 0x1234_5678, fill: 0x5a)
        #expect(csw.signature == 0x5342_5355, "CSW signature 'USBS'")
        #expect(csw.tag == 0x1234_5678)
        #expect(csw.status == 1, "\(csw)")

        // REQUEST SENSE: DATA PROTECT (7), WRITE PROTECTED (ASC 0x27, ASCQ 0).
        let cbw = try await peer.bulkOut(endpoint: 0x02, data: commandBlockWrapper(tag: 2, dataLength: 18, isIn: true, Self.requestSenseCDB),
                                         id: 20)
        #expect(cbw.status == Self.success)
        let senseData = try await peer.bulkIn(endpoint: 0x81, length: 18, id: 21)
        let sense = byteArray(senseData.data)
        try #require(sense.count == 18, "sense data: \(sense)")
        #expect(sense[0] & 0x7f == 0x70, "fixed-format, current error: \(sense)")
        #expect(sense[2] & 0x0f == 0x07, "sense key DATA PROTECT: \(sense)")
        #expect(sense[12] == 0x27 && sense[13] == 0x00, "ASC/ASCQ WRITE PROTECTED: \(sense)")
        let senseStatus = try #require(CommandStatus(try await peer.bulkIn(endpoint: 0x81, length: 13, id: 22).data))
        #expect(senseStatus.tag == 2 && senseStatus.status == 0, "\(senseStatus)")

        // The sense was reported once: a second REQUEST SENSE says NO SENSE.
        _ = try await peer.bulkOut(endpoint: 0x02, data: commandBlockWrapper(tag: 3, dataLength: 18, isIn: true, Self.requestSenseCDB), id: 30)
        let again = byteArray(try await peer.bulkIn(endpoint: 0x81, length: 18, id: 31).data)
        #expect(again.count == 18 && again[2] & 0x0f == 0 && again[12] == 0, "\(again)")
        _ = try await peer.bulkIn(endpoint: 0x81, length: 13, id: 32)

        #expect(try Self.firstBlock(of: image) == before, "the image changed")
        try await rig.finish()
    }

    /// The same exchange on a writable stick succeeds and reaches the file:
    /// the read-only test above fails for the reason it names, not because
    /// the exchange itself is wrong.
    @Test func theSameWriteToAWritableStickSucceeds() async throws {
        let (rig, image) = try await Self.stick(readOnly: false)
        let csw = try await Self.writeBlockZero(rig.peer, tag: 7, fill: 0x5a)
        #expect(csw.tag == 7 && csw.status == 0 && csw.residue == 0, "\(csw)")
        try await rig.finish()
        #expect(try Self.firstBlock(of: image) == [UInt8](repeating: 0x5a, count: 512))
    }
}
