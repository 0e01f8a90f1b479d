import Foundation
import NIOCore
import Testing
@testable import Devices

/// What the stick says about its write cache is what it does (architecture.md):
/// the caching page reports the write cache off, so every WRITE is on disk
/// (fdatasync) before its CSW reports success. And an image is locked while
/// a device uses it: one writer, or any number of readers.
@Suite("StickDurabilityTests")
struct StickDurabilityTests {
    @Test func modeSenseReportsTheWriteCacheOff() async throws {
        var s = StickDriver(device: try MassStorageDevice(imagePath: try makeStickImage(blocks: 64), readOnly: false,
                                                          serial: "DUR"))
        // MODE SENSE(6), caching page 0x08.
        let (d, csw) = try await s.command([0x1a, 0, 0x08, 0, 0xff, 0], dataLength: 255)
        #expect(csw.status == 0)
        #expect(d.count >= 4 + 3 && d[4] == 0x08)
        #expect(d[4 + 2] & 0x04 == 0, "WCE set: the guest would have to flush")
    }

    @Test func aWriteIsSyncedToDiskBeforeItsStatusSaysSo() async throws {
        let device = try MassStorageDevice(imagePath: try makeStickImage(blocks: 64), readOnly: false, serial: "DUR")
        var s = StickDriver(device: device)
        let before = device.imageDataSyncs
        // WRITE(10) of 2 blocks at LBA 4, in two bulk OUT packets.
        let cbw = StickDriver.cbw(tag: 77, dataLength: 1024, isIn: false, [0x2a, 0] + be(4, 4) + [0] + be(2, 2) + [0])
        _ = await device.transfer(endpoint: MassStorageDevice.bulkOut, length: 31, data: cbw, streamID: 0)
        _ = await device.transfer(endpoint: MassStorageDevice.bulkOut, length: 512,
                                  data: ByteBuffer(bytes: [UInt8](repeating: 1, count: 512)), streamID: 0)
        #expect(device.imageDataSyncs == before, "synced before all the data arrived")
        _ = await device.transfer(endpoint: MassStorageDevice.bulkOut, length: 512,
                                  data: ByteBuffer(bytes: [UInt8](repeating: 2, count: 512)), streamID: 0)
        // The data phase is over: the CSW (next bulk IN) may only report
        // success once the data is durable. Before the fix: 0 syncs.
        #expect(device.imageDataSyncs == before + 1, "WRITE acknowledged without fdatasync")
        let csw = await device.transfer(endpoint: MassStorageDevice.bulkIn, length: 13, data: nil, streamID: 0)
        #expect(byteArray(csw.data).count == 13 && byteArray(csw.data)[12] == 0)
        // A failed (out-of-range) WRITE moves no data and needs no sync.
        let (_, bad) = try await s.command([0x2a, 0] + be(64, 4) + [0] + be(1, 2) + [0], dataLength: 512, isIn: false)
        #expect(bad.status == 1)
        #expect(device.imageDataSyncs == before + 1)
    }

    // MARK: Locking

    @Test func aReadWriteImageCannotBeOpenedTwice() throws {
        let image = try makeStickImage(blocks: 8)
        let first = try MassStorageDevice(imagePath: image, readOnly: false, serial: "A")
        do {
            _ = try MassStorageDevice(imagePath: image, readOnly: false, serial: "B")
            Issue.record("a second read-write open of a locked image succeeded")
        } catch let e as DeviceError {
            #expect(e.description.contains(image), "\(e)")
            #expect(e.description.contains("in use"), "\(e)")
        }
        // Nor read-only while it is written.
        #expect(throws: DeviceError.self) { try MassStorageDevice(imagePath: image, readOnly: true, serial: "C") }
        _ = first
    }

    @Test func readOnlyOpensShareTheImageButKeepAWriterOut() throws {
        let image = try makeStickImage(blocks: 8)
        let a = try MassStorageDevice(imagePath: image, readOnly: true, serial: "A")
        let b = try MassStorageDevice(imagePath: image, readOnly: true, serial: "B")
        #expect(throws: DeviceError.self) { try MassStorageDevice(imagePath: image, readOnly: false, serial: "C") }
        _ = (a, b)
    }

    @Test func theLockGoesWithTheDevice() throws {
        let image = try makeStickImage(blocks: 8)
        do { _ = try MassStorageDevice(imagePath: image, readOnly: false, serial: "A") }
        // The first device is gone: its lock with it.
        _ = try MassStorageDevice(imagePath: image, readOnly: false, serial: "B")
    }

    /// A session closes a device it unplugs; a straggling reference (a
    /// transfer task finishing) must not keep the image from the assignment
    /// that replaces it. open() takes the lock again.
    @Test func closeReleasesTheLockAndOpenTakesItAgain() async throws {
        let image = try makeStickImage(blocks: 8)
        let first = try MassStorageDevice(imagePath: image, readOnly: false, serial: "A")
        await first.close()
        let second = try MassStorageDevice(imagePath: image, readOnly: false, serial: "B")
        await #expect(throws: DeviceError.self) { try await first.open() }
        await second.close()
        try await first.open()
        #expect(throws: DeviceError.self) { try MassStorageDevice(imagePath: image, readOnly: true, serial: "C") }
    }

    @Test func anotherProcessHoldingTheLockKeepsUsOut() throws {
        let image = try makeStickImage(blocks: 8)
        // flock(1) holds an exclusive lock until we close its stdin.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        holder.arguments = ["-x", image, "sh", "-c", "echo locked; read _"]
        let stdin = Pipe(), stdout = Pipe()
        holder.standardInput = stdin
        holder.standardOutput = stdout
        try holder.run()
        defer { try? stdin.fileHandleForWriting.close(); holder.waitUntilExit() }
        // Wait for "locked" (a read, not a sleep).
        let line = stdout.fileHandleForReading.availableData
        #expect(String(decoding: line, as: UTF8.self).hasPrefix("locked"))
        #expect(throws: DeviceError.self) { try MassStorageDevice(imagePath: image, readOnly: true, serial: "A") }
        // And we keep flock(1) out while we hold it.
        try stdin.fileHandleForWriting.close()
        holder.waitUntilExit()
        let ours = try MassStorageDevice(imagePath: image, readOnly: false, serial: "B")
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        probe.arguments = ["-n", "-s", image, "true"]
        try probe.run()
        probe.waitUntilExit()
        #expect(probe.terminationStatus != 0, "another process got a shared lock on an image we write")
        _ = ours
    }
}
