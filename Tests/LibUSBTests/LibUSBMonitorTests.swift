import Devices
import Foundation
import TestSupport
import NIOCore
import XCTest

/// Enumeration, hotplug and opening by identity, against the emulated bus
/// (see UmockdevHarness: each test body runs in a child under umockdev).
final class LibUSBMonitorTests: XCTestCase {
    func testListsDevicesWithPortPathsStringsAndSpeedWithoutOpening() async throws {
        try await Umockdev.run(self) {
            let monitor = try LibUSBMonitor()
            let devices = try await monitor.presentDevices()
            XCTAssertEqual(devices.map(\.port), ["1-1", "1-1.1", "1-1.2"], "root hub excluded, hub and its ports listed")

            let stick = try XCTUnwrap(devices.first { $0.port == "1-1.1" })
            XCTAssertEqual(stick, USBDeviceInfo(vendorID: 0x0951, productID: 0x1666, deviceClass: 0, serial: "STICK0001",
                                                manufacturer: "Emulated", productName: "Test Stick", bus: 1, port: "1-1.1",
                                                address: 3, speed: .high))
            let keyboard = try XCTUnwrap(devices.first { $0.port == "1-1.2" })
            XCTAssertEqual(keyboard.vendorID, 0x046d)
            XCTAssertEqual(keyboard.serial, "KBD0001")
            XCTAssertEqual(keyboard.productName, "Test Keyboard")
            XCTAssertEqual(keyboard.speed, .low)
            let hub = try XCTUnwrap(devices.first { $0.port == "1-1" })
            XCTAssertEqual(hub.deviceClass, 9)

            // Listing opened nothing: the kernel drivers are still bound, nothing claimed.
            let state = try TestbedControl.state("stick")
            XCTAssertEqual(state.claimed, [])
            XCTAssertEqual(state.drivers, ["0": "usb-storage"])
        }
    }

    func testOpenDetachesKernelDriverAndCloseReattachesIt() async throws {
        try await Umockdev.run(self) {
            let monitor = try LibUSBMonitor()
            let info = try await stickInfo(monitor)
            let device = try await monitor.open(info)
            XCTAssertEqual(device.descriptor.vendorID, 0x0951)
            XCTAssertEqual(device.descriptor.serial, "STICK0001")
            XCTAssertEqual(device.speed, .high)
            let config = await device.activeConfiguration
            XCTAssertEqual(config?.interfaces.first?.endpoints.map(\.address), [0x81, 0x02])
            var state = try TestbedControl.state("stick")
            XCTAssertEqual(state.claimed, [0])
            XCTAssertEqual(state.drivers, [:])
            XCTAssertEqual(state.detached, [0])

            await device.close()
            state = try TestbedControl.state("stick")
            XCTAssertEqual(state.claimed, [])
            XCTAssertEqual(state.attached, [0])
            XCTAssertEqual(state.drivers, ["0": "usb-storage"])
        }
    }

    func testBusyDeviceIsReportedBusyAndAMismatchNotFound() async throws {
        try await Umockdev.run(self) {
            let monitor = try LibUSBMonitor()
            let info = try await stickInfo(monitor)
            try TestbedControl.send("busy stick 1")
            do {
                _ = try await monitor.open(info)
                XCTFail("opened a device another process holds")
            } catch let error as DeviceError {
                guard case .busy = error else { return XCTFail("expected busy, got \(error)") }
            }
            // Not stolen: the kernel driver we detached is given back.
            XCTAssertEqual(try TestbedControl.state("stick").drivers, ["0": "usb-storage"])

            var other = info
            other.productID = 0x1234    // something else now sits at that port
            do {
                _ = try await monitor.open(other)
                XCTFail("opened a device whose identity does not match")
            } catch let error as DeviceError {
                guard case .notFound = error else { return XCTFail("expected notFound, got \(error)") }
            }
        }
    }

    func testHotplugReportsArrivalAndDeparture() async throws {
        try await Umockdev.run(self, absent: ["keyboard"]) {
            let monitor = try LibUSBMonitor()
            var events = monitor.events().makeAsyncIterator()
            var second = monitor.events().makeAsyncIterator()   // several subscribers each get every event
            let before = try await monitor.presentDevices()
            XCTAssertFalse(before.contains { $0.port == "1-1.2" })

            try TestbedControl.send("plug keyboard")
            let arrived = try await nextEvent(&events)
            guard case .arrived(let info) = arrived else { return XCTFail("expected an arrival, got \(arrived)") }
            XCTAssertEqual(info.port, "1-1.2")
            XCTAssertEqual(info.serial, "KBD0001")
            XCTAssertEqual(info.vendorID, 0x046d)
            let arrivedToo = try await nextEvent(&second)
            XCTAssertEqual(arrivedToo, arrived)
            let after = try await monitor.presentDevices()
            XCTAssertTrue(after.contains { $0.port == "1-1.2" })

            try TestbedControl.send("unplug keyboard")
            let left = try await nextEvent(&events)
            // Sysfs is gone by now; the strings come from what was seen on arrival.
            XCTAssertEqual(left, .left(info))
            let leftToo = try await nextEvent(&second)
            XCTAssertEqual(leftToo, left)
        }
    }

    /// Without udevd (`HotplugSource.kernel`, issue 19 item 4) the
    /// process's libusb context never learns of a device plugged later: the
    /// monitor lists afresh and opens through the usbfs node. umockdev plays
    /// udevd, so the monitor is told to do without. What is checked here is
    /// the fresh look: umockdev's events are libudev's, which the kernel
    /// listener refuses, and its usbfs node answers neither
    /// USBDEVFS_CONNECTINFO nor a descriptor read, which
    /// libusb_wrap_sys_device needs. The lab host (a real kernel) checks
    /// the events and the open (hotplug case).
    func testWithoutUdevdAPlugAfterStartIsListedAndAnUnplugIsNot() async throws {
        try await Umockdev.run(self, absent: ["keyboard"]) {
            let monitor = try LibUSBMonitor(source: .kernel)
            XCTAssertEqual(monitor.source, .kernel)
            let before = try await monitor.presentDevices()
            XCTAssertEqual(before.map(\.port), ["1-1", "1-1.1"])

            try TestbedControl.send("plug keyboard")
            let after = try await monitor.presentDevices()
            XCTAssertEqual(after.map(\.port), ["1-1", "1-1.1", "1-1.2"], "a device plugged after the monitor started")
            let keyboard = try XCTUnwrap(after.first { $0.port == "1-1.2" })
            XCTAssertEqual(keyboard.serial, "KBD0001")

            try TestbedControl.send("unplug keyboard")
            let gone = try await monitor.presentDevices()
            XCTAssertEqual(gone.map(\.port), ["1-1", "1-1.1"], "an unplugged device is not listed")
            var other = try XCTUnwrap(gone.first { $0.port == "1-1.1" })
            other.productID = 0x1234
            do {
                _ = try await monitor.open(other)
                XCTFail("opened a device whose identity does not match")
            } catch let error as DeviceError {
                guard case .notFound = error else { return XCTFail("expected notFound, got \(error)") }
            }
        }
    }

    /// The same fresh look in the test process itself, whatever runs here.
    func testWithoutUdevdTheListIsWhatSysfsShowsOnThisMachine() async throws {
        guard !Umockdev.isChild else { return }
        let monitor = try LibUSBMonitor(source: .kernel)
        let devices = try await monitor.presentDevices()
        XCTAssertEqual(devices.map(\.port).sorted(), sysfsUSBDevicePorts())
        _ = monitor.events()
    }

    /// The list is what the kernel shows in sysfs, whatever the machine: on
    /// this one (no /dev/bus/usb) that is nothing, and libusb still works.
    /// Runs in the test process itself, without umockdev.
    func testListIsWhatSysfsShowsOnThisMachine() async throws {
        guard !Umockdev.isChild else { return }
        let monitor = try LibUSBMonitor()
        let devices = try await monitor.presentDevices()
        let expected = sysfsUSBDevicePorts()
        XCTAssertEqual(devices.map(\.port).sorted(), expected)
        if !FileManager.default.fileExists(atPath: "/dev/bus/usb") {
            XCTAssertEqual(devices, [], "no /dev/bus/usb, yet libusb listed devices")
        }
        print("LIBUSB this machine: /dev/bus/usb \(FileManager.default.fileExists(atPath: "/dev/bus/usb") ? "present" : "absent"), "
              + "\(devices.count) device(s) listed, sysfs shows \(expected)")
        _ = monitor.events()
    }

    /// The same comparison where /dev/bus/usb is present: the emulated bus,
    /// whose sysfs shows the hub and the two devices behind it.
    func testListIsWhatSysfsShowsWithABus() async throws {
        try await Umockdev.run(self) {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "/dev/bus/usb"), "umockdev shows /dev/bus/usb")
            let expected = sysfsUSBDevicePorts()
            XCTAssertEqual(expected, ["1-1", "1-1.1", "1-1.2"], "the testbed's sysfs")
            let monitor = try LibUSBMonitor()
            let devices = try await monitor.presentDevices()
            XCTAssertEqual(devices.map(\.port).sorted(), expected)
        }
    }
}

func stickInfo(_ monitor: LibUSBMonitor) async throws -> USBDeviceInfo {
    let devices = try await monitor.presentDevices()
    return try XCTUnwrap(devices.first { $0.port == "1-1.1" })
}

func keyboardInfo(_ monitor: LibUSBMonitor) async throws -> USBDeviceInfo {
    let devices = try await monitor.presentDevices()
    return try XCTUnwrap(devices.first { $0.port == "1-1.2" })
}

/// The next hotplug event. No timeout of its own: a hang is caught by the
/// parent's limit on the child process, which then shows its output.
func nextEvent(_ iterator: inout AsyncStream<USBDeviceEvent>.Iterator) async throws -> USBDeviceEvent {
    guard let event = await iterator.next() else { throw TestbedError(message: "event stream ended") }
    return event
}
