import Devices
import Foundation
import TestSupport
import NIOConcurrencyHelpers
import NIOCore
import XCTest

/// Transfers through libusb to the emulated stick (bulk, Bulk-Only
/// Transport) and keyboard (control, interrupt), byte for byte, and the
/// ways transfers end: stall, timeout, cancellation, unplug.
final class LibUSBTransferTests: XCTestCase {
    func testControlTransfersByteForByte() async throws {
        try await Umockdev.run(self) {
            let keyboard = try await openKeyboard()
            let device = await keyboard.control(.init(requestType: 0x80, request: 6, value: 0x0100, index: 0, length: 18), data: nil)
            XCTAssertEqual(device.status, .success)
            XCTAssertEqual(bytes(device.data), [18, 1, 0x00, 0x02, 0, 0, 0, 8, 0x6d, 0x04, 0x1c, 0xc3, 0x10, 0x49, 1, 2, 3, 1])

            // Asking for more than there is: only what the device sent comes back.
            let config = await keyboard.control(.init(requestType: 0x80, request: 6, value: 0x0200, index: 0, length: 255), data: nil)
            XCTAssertEqual(config.status, .success)
            XCTAssertEqual(config.data?.readableBytes, 34)

            let report = await keyboard.control(.init(requestType: 0x81, request: 6, value: 0x2200, index: 0, length: 63), data: nil)
            XCTAssertEqual(report.data.map(bytes)?.prefix(4), [0x05, 0x01, 0x09, 0x06])
            XCTAssertEqual(report.data?.readableBytes, 63)

            let product = await keyboard.control(.init(requestType: 0x80, request: 6, value: 0x0302, index: 0x0409, length: 255), data: nil)
            XCTAssertEqual(bytes(product.data), [28, 3] + Array("Test Keyboard".utf16).flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] })

            // OUT data reaches the device, and comes back from it.
            let set = await keyboard.control(.init(requestType: 0x21, request: 0x09, value: 0x0200, index: 0, length: 1),
                                             data: ByteBuffer(bytes: [0x05]))
            XCTAssertEqual(set, .init(status: .success, consumed: 1))
            let get = await keyboard.control(.init(requestType: 0xa1, request: 0x01, value: 0x0200, index: 0, length: 1), data: nil)
            XCTAssertEqual(bytes(get.data), [0x05])

            // A request the device does not know: STALL.
            let vendor = await keyboard.control(.init(requestType: 0xc0, request: 0x41, value: 0, index: 0, length: 1), data: nil)
            XCTAssertEqual(vendor.status, .stall)
            await keyboard.close()
        }
    }

    func testBulkMassStorageReadWrite() async throws {
        try await Umockdev.run(self) {
            let stick = try await openStick()
            let inquiry = try await scsi(stick, [0x12, 0, 0, 0, 36, 0], dataIn: 36)
            XCTAssertEqual(inquiry.status, 0)
            XCTAssertEqual(Array(inquiry.data[8..<16]), Array("Emulated".utf8))

            let capacity = try await scsi(stick, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], dataIn: 8)
            XCTAssertEqual(capacity.data, [0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00], "2048 blocks of 512")

            // READ(10) of 8 blocks at LBA 5: the image's bytes, exactly.
            let read = try await scsi(stick, [0x28, 0, 0, 0, 0, 5, 0, 0, 8, 0], dataIn: 4096)
            XCTAssertEqual(read.status, 0)
            XCTAssertEqual(read.data, (5 * 512..<13 * 512).map(Umockdev.imageByte))

            // WRITE(10) one block at LBA 9, then read it back, and find it in the file.
            let block = (0..<512).map { UInt8(255 - $0 % 256) }
            let write = try await scsi(stick, [0x2a, 0, 0, 0, 0, 9, 0, 0, 1, 0], dataOut: block)
            XCTAssertEqual(write.status, 0)
            let back = try await scsi(stick, [0x28, 0, 0, 0, 0, 9, 0, 0, 1, 0], dataIn: 512)
            XCTAssertEqual(back.data, block)
            let file = try Data(contentsOf: URL(fileURLWithPath: ProcessInfo.processInfo.environment[Umockdev.imageVariable]!))
            XCTAssertEqual(Array(file[9 * 512..<10 * 512]), block)
            await stick.close()
        }
    }

    func testInterruptReportsAndBabble() async throws {
        try await Umockdev.run(self) {
            let keyboard = try await openKeyboard()
            for n in 0..<3 {
                // The session asks 64 KiB for interrupt receiving; one report of 8 ends it.
                let r = await keyboard.transfer(endpoint: 0x81, length: 65536, data: nil, streamID: 0)
                XCTAssertEqual(r.status, .success)
                XCTAssertEqual(bytes(r.data), [0, 0, UInt8(4 + n), 0, 0, 0, 0, 0])
            }
            // A buffer smaller than the report: the device babbles.
            let small = await keyboard.transfer(endpoint: 0x81, length: 4, data: nil, streamID: 0)
            XCTAssertEqual(small.status, .babble)
            // No such endpoint.
            let none = await keyboard.transfer(endpoint: 0x85, length: 8, data: nil, streamID: 0)
            XCTAssertEqual(none.status, .invalid)
            await keyboard.close()
        }
    }

    func testStallThenClearFeatureHaltGoesThroughClearHalt() async throws {
        try await Umockdev.run(self) {
            let stick = try await openStick()
            // An unknown command with a data-in stage: the stick stalls bulk IN.
            let sent = await stick.transfer(endpoint: 0x02, length: 31, data: cbw(tag: 7, length: 16, isIn: true, [0xff, 0, 0, 0, 0, 0]), streamID: 0)
            XCTAssertEqual(sent.status, .success)
            XCTAssertEqual(sent.consumed, 31)
            let data = await stick.transfer(endpoint: 0x81, length: 16, data: nil, streamID: 0)
            XCTAssertEqual(data.status, .stall)
            XCTAssertEqual(try TestbedControl.state("stick").halted, [0x81])

            // The VM clears the halt with a standard request; it must become
            // libusb_clear_halt (the model leaves a raw CLEAR_FEATURE URB halted).
            let clear = await stick.control(.init(requestType: 0x02, request: 1, value: 0, index: 0x81, length: 0), data: nil)
            XCTAssertEqual(clear.status, .success)
            let state = try TestbedControl.state("stick")
            XCTAssertEqual(state.clear_halt, 1)
            XCTAssertEqual(state.control_clear_feature, 0)
            XCTAssertEqual(state.halted, [])

            let csw = await stick.transfer(endpoint: 0x81, length: 13, data: nil, streamID: 0)
            XCTAssertEqual(csw.status, .success)
            XCTAssertEqual(bytes(csw.data).last, 1, "command failed status in the CSW")
            await stick.close()
        }
    }

    func testControlTimeout() async throws {
        try await Umockdev.run(self) {
            var timeouts = LibUSBDevice.Timeouts()
            timeouts.control = 200
            let keyboard = try await openKeyboard(timeouts: timeouts)
            let started = Date()
            let r = await keyboard.control(.init(requestType: 0xc0, request: 0x42, value: 0, index: 0, length: 1), data: nil)
            XCTAssertEqual(r.status, .timeout)
            XCTAssertLessThan(Date().timeIntervalSince(started), 3)
            XCTAssertEqual(try TestbedControl.state("keyboard").discard, 1, "libusb discarded the URB")
            // Still usable afterwards.
            let d = await keyboard.control(.init(requestType: 0x80, request: 6, value: 0x0100, index: 0, length: 18), data: nil)
            XCTAssertEqual(d.status, .success)
            await keyboard.close()
        }
    }

    func testCancellingTheTaskCancelsTheTransfer() async throws {
        try await Umockdev.run(self) {
            let stick = try await openStick()
            // Bulk IN with no command: the device NAKs for ever.
            let pending = Task { await stick.transfer(endpoint: 0x81, length: 512, data: nil, streamID: 0) }
            try await waitFor("the URB is in flight at the device", timeout: 10) {
                try TestbedControl.state("stick").in_flight == 1
            }
            let started = Date()
            pending.cancel()
            let r = await pending.value
            XCTAssertEqual(r.status, .cancelled)
            // A figure, with a generous bound: a cancel that did not work hangs (the parent's limit catches that).
            let cancelSeconds = Date().timeIntervalSince(started)
            print("LIBUSB cancel of a pending bulk IN took \(String(format: "%.3f", cancelSeconds)) s")
            XCTAssertLessThan(cancelSeconds, 10)
            XCTAssertEqual(try TestbedControl.state("stick").discard, 1)

            // A task cancelled before it submits never reaches the device.
            let early = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return await stick.transfer(endpoint: 0x81, length: 512, data: nil, streamID: 0)
            }
            let earlyResult = await early.value
            XCTAssertEqual(earlyResult.status, .cancelled)

            // The device works on.
            let inquiry = try await scsi(stick, [0x12, 0, 0, 0, 36, 0], dataIn: 36)
            XCTAssertEqual(inquiry.status, 0)
            await stick.close()
        }
    }

    /// The session's path for bulk and interrupt: transfers started without
    /// waiting are all URBs in the kernel at once, end in order per
    /// endpoint, and cancel one by one.
    func testStartedTransfersAreQueuedInTheKernelAndEndInOrder() async throws {
        try await Umockdev.run(self) {
            let stick = try await openStick()
            let results = NIOLockedValueBox<[String: USBTransferResult]>([:])
            func start(_ name: String, _ endpoint: UInt8, _ length: Int, _ data: ByteBuffer? = nil) -> (any USBCancellableTransfer)? {
                stick.submit(.data(endpoint: endpoint, length: length, data: data, streamID: 0)) { r in
                    results.withLockedValue { $0[name] = r }
                }
            }
            // Four reads with no command: the device NAKs them, all four wait in the kernel.
            let reads = (0..<4).compactMap { start("nak\($0)", 0x81, 512) }
            XCTAssertEqual(reads.count, 4)
            try await waitFor("four URBs are in flight at the device", timeout: 10) {
                try TestbedControl.state("stick").in_flight == 4
            }
            for r in reads { r.cancel() }
            try await waitFor("the four ended", timeout: 10) { results.withLockedValue { $0.count } == 4 }
            XCTAssertEqual(results.withLockedValue { $0.values.map(\.status) }, Array(repeating: .cancelled, count: 4))
            XCTAssertEqual(try TestbedControl.state("stick").discard, 4)

            // READ(10) of 8 blocks at LBA 5: command, data and status all submitted before any ends.
            _ = start("cbw", 0x02, 31, cbw(tag: 7, length: 4096, isIn: true, [0x28, 0, 0, 0, 0, 5, 0, 0, 8, 0]))
            _ = start("data", 0x81, 4096)
            _ = start("csw", 0x81, 13)
            try await waitFor("the command ended", timeout: 10) { results.withLockedValue { $0.count } == 7 }
            let r = results.withLockedValue { $0 }
            XCTAssertEqual(r["cbw"], .outDone(31))
            XCTAssertEqual(bytes(r["data"]?.data), (5 * 512..<13 * 512).map(Umockdev.imageByte))
            XCTAssertEqual(bytes(r["csw"]?.data), [0x55, 0x53, 0x42, 0x53, 7, 0, 0, 0, 0, 0, 0, 0, 0])

            // An endpoint the device does not have: invalid, at once.
            _ = start("bad", 0x85, 8)
            XCTAssertEqual(results.withLockedValue { $0["bad"]?.status }, .invalid)
            await stick.close()
        }
    }

    func testUnplugMidTransferEndsWithNoDevice() async throws {
        try await Umockdev.run(self) {
            let stick = try await openStick()
            let pending = Task { await stick.transfer(endpoint: 0x81, length: 512, data: nil, streamID: 0) }
            try await waitFor("the URB is in flight at the device", timeout: 10) {
                try TestbedControl.state("stick").in_flight == 1
            }
            let started = Date()
            try TestbedControl.send("unplug stick")
            let r = await pending.value
            XCTAssertEqual(r.status, .noDevice)
            let unplugSeconds = Date().timeIntervalSince(started)
            print("LIBUSB a pending bulk IN ended \(String(format: "%.3f", unplugSeconds)) s after the unplug")
            XCTAssertLessThan(unplugSeconds, 10)
            let after = await stick.transfer(endpoint: 0x02, length: 31, data: cbw(tag: 1, length: 0, isIn: false, [0, 0, 0, 0, 0, 0]), streamID: 0)
            XCTAssertEqual(after.status, .noDevice)
            let control = await stick.control(.init(requestType: 0x80, request: 6, value: 0x0100, index: 0, length: 18), data: nil)
            XCTAssertEqual(control.status, .noDevice)
            let closing = Date()
            await stick.close()
            XCTAssertLessThan(Date().timeIntervalSince(closing), 10, "close of a vanished device does not hang")
        }
    }

    /// Bulk streams need USB 3 hardware; here the ioctl level is checked:
    /// the model records what usbfs would receive.
    func testBulkStreamsReachTheKernelInterface() async throws {
        try await Umockdev.run(self) {
            let stick = try await openStick()
            let device = stick as any USBDevice
            let allocated = await device.allocateStreams(endpoints: [0x81, 0x02], count: 4)
            XCTAssertEqual(allocated, .success)
            XCTAssertEqual(try TestbedControl.state("stick").streams, ["129": 4, "2": 4])
            // A transfer on stream 3 carries its stream id in the URB.
            let sent = await stick.transfer(endpoint: 0x02, length: 31, data: cbw(tag: 2, length: 0, isIn: false, [0, 0, 0, 0, 0, 0]), streamID: 3)
            XCTAssertEqual(sent.status, .success)
            XCTAssertEqual(try TestbedControl.state("stick").last_stream_id, 3)
            let freed = await device.freeStreams(endpoints: [0x81, 0x02])
            XCTAssertEqual(freed, .success)
            XCTAssertEqual(try TestbedControl.state("stick").streams, [:])
            await stick.close()
        }
    }

    func testConfigurationAltSettingAndReset() async throws {
        try await Umockdev.run(self) {
            let stick = try await openStick()
            let configured = await stick.setConfiguration(1)
            XCTAssertEqual(configured, .success)
            var state = try TestbedControl.state("stick")
            XCTAssertEqual(state.config, 1)
            XCTAssertEqual(state.claimed, [0], "interfaces claimed again after set configuration")
            let altSet = await stick.setAltSetting(interface: 0, alt: 0)
            XCTAssertEqual(altSet, .success)
            let alt0 = await stick.altSetting(interface: 0)
            XCTAssertEqual(alt0, 0)
            let alt3 = await stick.altSetting(interface: 3)
            XCTAssertNil(alt3)
            let reset = await stick.reset()
            XCTAssertEqual(reset, .success)
            state = try TestbedControl.state("stick")
            XCTAssertEqual(state.reset, 1)
            XCTAssertEqual(state.alt, ["0": 0])
            await stick.close()
        }
    }
}

// MARK: Helpers (run in the child)

func openStick(timeouts: LibUSBDevice.Timeouts = .init()) async throws -> LibUSBDevice {
    let monitor = try LibUSBMonitor(timeouts: timeouts)
    let device = try await monitor.open(try await stickInfo(monitor))
    return try XCTUnwrap(device as? LibUSBDevice)
}

func openKeyboard(timeouts: LibUSBDevice.Timeouts = .init()) async throws -> LibUSBDevice {
    let monitor = try LibUSBMonitor(timeouts: timeouts)
    let device = try await monitor.open(try await keyboardInfo(monitor))
    return try XCTUnwrap(device as? LibUSBDevice)
}

func bytes(_ buffer: ByteBuffer?) -> [UInt8] {
    buffer.map { Array($0.readableBytesView) } ?? []
}

/// A Bulk-Only Transport command block wrapper (BOT 1.0, 5.1).
func cbw(tag: UInt32, length: UInt32, isIn: Bool, _ cb: [UInt8]) -> ByteBuffer {
    var b = ByteBuffer()
    b.writeInteger(UInt32(0x4342_5355), endianness: .little)
    b.writeInteger(tag, endianness: .little)
    b.writeInteger(length, endianness: .little)
    b.writeInteger(UInt8(isIn ? 0x80 : 0))
    b.writeInteger(UInt8(0))                        // LUN
    b.writeInteger(UInt8(cb.count))
    b.writeBytes(cb + [UInt8](repeating: 0, count: 16 - cb.count))
    return b
}

/// One SCSI command over BOT: CBW, data stage, CSW. Returns the CSW status and the data.
func scsi(_ device: LibUSBDevice, _ cb: [UInt8], dataIn: Int = 0, dataOut: [UInt8] = []) async throws -> (status: UInt8, data: [UInt8]) {
    let length = dataIn > 0 ? dataIn : dataOut.count
    let sent = await device.transfer(endpoint: 0x02, length: 31, data: cbw(tag: 0x1234, length: UInt32(length), isIn: dataIn > 0, cb), streamID: 0)
    guard sent.status == .success, sent.consumed == 31 else { throw TestbedError(message: "CBW: \(sent)") }
    var data: [UInt8] = []
    if dataIn > 0 {
        let r = await device.transfer(endpoint: 0x81, length: dataIn, data: nil, streamID: 0)
        guard r.status == .success else { throw TestbedError(message: "data in: \(r.status)") }
        data = bytes(r.data)
    } else if !dataOut.isEmpty {
        let r = await device.transfer(endpoint: 0x02, length: dataOut.count, data: ByteBuffer(bytes: dataOut), streamID: 0)
        guard r.status == .success, r.consumed == dataOut.count else { throw TestbedError(message: "data out: \(r)") }
    }
    let csw = await device.transfer(endpoint: 0x81, length: 13, data: nil, streamID: 0)
    let c = bytes(csw.data)
    guard csw.status == .success, c.count == 13, c[0..<4] == [0x55, 0x53, 0x42, 0x53] else { throw TestbedError(message: "CSW: \(csw)") }
    return (c[12], data)
}
