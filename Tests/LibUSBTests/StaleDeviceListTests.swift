@testable import Devices
import Foundation
import Testing
import TestSupport

/// libusb's device list checked against sysfs (LibUSBMonitor+Sysfs): with
/// udevd gone after apply started, the list goes stale and the bus must be
/// listed afresh. The lab-host hotplug case shows it against a real kernel.
@Suite struct StaleDeviceListTests {
    /// A sysfs `devices` folder as the kernel has it: links named by port
    /// path (and root hubs, interfaces) to folders holding `devnum`.
    func sysfs(_ devices: [String: Int], extra: [String] = ["usb1", "1-0:1.0", "1-1:1.0"]) throws -> String {
        let root = try makeTemporaryDirectory("usbredir-sysfs")
        let real = root.appendingPathComponent("devices/pci0000:00")
        let bus = root.appendingPathComponent("bus/usb/devices")
        try FileManager.default.createDirectory(at: bus, withIntermediateDirectories: true)
        for (name, devnum) in devices.map({ ($0.key, Optional($0.value)) }) + extra.map({ ($0, nil as Int?) }) {
            let dir = real.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try "\(devnum ?? 1)\n".write(to: dir.appendingPathComponent("devnum"), atomically: true, encoding: .utf8)
            try FileManager.default.createSymbolicLink(at: bus.appendingPathComponent(name), withDestinationURL: dir)
        }
        return bus.path
    }

    func listed(_ devices: [String: Int]) -> [USBDeviceInfo] {
        devices.map { USBDeviceInfo(vendorID: 0x46f4, productID: 1, deviceClass: 0, serial: nil, manufacturer: nil, productName: nil,
                                    bus: 1, port: $0.key, address: $0.value, speed: .high) }
    }

    @Test func theSameDevicesAtTheSameAddressesAgreeRootHubsAndInterfacesAside() throws {
        let bus = try sysfs(["1-1": 2, "1-1.5": 7])
        #expect(LibUSBMonitor.sysfsPresent(bus) == [.init(port: "1-1", address: 2), .init(port: "1-1.5", address: 7)])
        #expect(LibUSBMonitor.listAgrees(listed(["1-1": 2, "1-1.5": 7]), sysfs: bus))
    }

    @Test func aDevicePluggedThatLibusbNeverHeardOfDisagrees() throws {
        let bus = try sysfs(["1-1": 2, "1-1.5": 7])
        #expect(!LibUSBMonitor.listAgrees(listed(["1-1": 2]), sysfs: bus))
    }

    @Test func aDeviceUnpluggedThatLibusbStillListsDisagrees() throws {
        let bus = try sysfs(["1-1": 2])
        #expect(!LibUSBMonitor.listAgrees(listed(["1-1": 2, "1-1.5": 7]), sysfs: bus))
    }

    @Test func aDeviceBackAtItsPortWithANewAddressDisagrees() throws {
        let bus = try sysfs(["1-1": 2, "1-1.5": 8])
        #expect(!LibUSBMonitor.listAgrees(listed(["1-1": 2, "1-1.5": 7]), sysfs: bus))
    }
}
