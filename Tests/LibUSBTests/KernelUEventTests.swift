import Devices
import Foundation
import Testing

/// Hotplug without udevd (issue 19 item 4): the kernel's uevents as read
/// from its netlink socket, and when the monitor uses them. The lab-host
/// suite checks the whole of it against a real kernel (hotplug case).
@Suite struct KernelUEventTests {
    /// What the lab host's kernel sends for a stick plugged behind the hub.
    static func datagram(_ action: String, _ devpath: String, _ fields: [String]) -> [UInt8] {
        Array(("\(action)@\(devpath)\0" + (["ACTION=\(action)", "DEVPATH=\(devpath)"] + fields).map { $0 + "\0" }.joined()).utf8)
    }

    static let stickPath = "/devices/pci0000:00/0000:00:02.0/usb1/1-1/1-1.5"
    static let stickFields = ["SUBSYSTEM=usb", "MAJOR=189", "MINOR=4", "DEVNAME=bus/usb/001/005", "DEVTYPE=usb_device",
                              "PRODUCT=46f4/1/0", "TYPE=0/0/0", "BUSNUM=001", "DEVNUM=005", "SEQNUM=1821"]

    @Test func aStickPluggedIsAUSBDeviceAddWithItsPortAsName() throws {
        let event = try #require(KernelUEvent.parse(Self.datagram("add", Self.stickPath, Self.stickFields)))
        #expect(event.action == "add")
        #expect(event.devpath == Self.stickPath)
        #expect(event.name == "1-1.5")
        #expect(event.isUSBDevice)
        #expect(event.fields["DEVNAME"] == "bus/usb/001/005")
        #expect(event.fields["PRODUCT"] == "46f4/1/0")

        let removed = try #require(KernelUEvent.parse(Self.datagram("remove", Self.stickPath, Self.stickFields)))
        #expect(removed.action == "remove" && removed.isUSBDevice)
    }

    @Test func itsInterfacesAndOtherSubsystemsAreNotUSBDevices() throws {
        let interface = try #require(KernelUEvent.parse(Self.datagram("add", Self.stickPath + "/1-1.5:1.0",
            ["SUBSYSTEM=usb", "DEVTYPE=usb_interface", "INTERFACE=8/6/80"])))
        #expect(!interface.isUSBDevice)
        #expect(interface.name == "1-1.5:1.0")
        let disk = try #require(KernelUEvent.parse(Self.datagram("add", "/devices/virtual/block/sda",
            ["SUBSYSTEM=block", "DEVTYPE=disk"])))
        #expect(!disk.isUSBDevice)
    }

    @Test func onlyTheKernelsFormatIsRead() {
        // udevd's re-broadcast (and umockdev's) starts with libudev's binary header.
        var libudev = Array("libudev\0".utf8) + [0xfe, 0xed, 0xca, 0xfe] + [UInt8](repeating: 0, count: 28)
        libudev += Array("ACTION=add\0SUBSYSTEM=usb\0DEVTYPE=usb_device\0".utf8)
        #expect(KernelUEvent.parse(libudev) == nil)
        #expect(KernelUEvent.parse([]) == nil)
        #expect(KernelUEvent.parse(Array("add@\0".utf8)) == nil, "no fields")
        #expect(KernelUEvent.parse(Array("@/devices/x\0ACTION=\0DEVPATH=/devices/x\0".utf8)) == nil, "no action")
        // The header and the fields disagree.
        #expect(KernelUEvent.parse(Self.datagram("add", Self.stickPath, []).map { $0 } + Array("ACTION=remove\0".utf8)) == nil)
        #expect(KernelUEvent.parse(Array("add@/devices/x\0ACTION=add\0DEVPATH=/devices/y\0".utf8)) == nil)
        #expect(KernelUEvent.parse(Array("add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0garbage\0".utf8)) == nil)
    }

    @Test func fieldsAreBounded() {
        let many = (0...KernelUEvent.fieldLimit).map { "F\($0)=x" }
        #expect(KernelUEvent.parse(Self.datagram("add", Self.stickPath, many)) == nil)
        let enough = (0..<(KernelUEvent.fieldLimit - 2)).map { "F\($0)=x" }     // with ACTION and DEVPATH: the limit
        #expect(KernelUEvent.parse(Self.datagram("add", Self.stickPath, enough)) != nil)
    }

    @Test func theKernelsEventsAreUsedWhenUdevdIsNotRunning() {
        #expect(HotplugSource.choose(udevControlExists: true, environment: [:]) == .udevd)
        #expect(HotplugSource.choose(udevControlExists: false, environment: [:]) == .kernel)
        #expect(HotplugSource.choose(udevControlExists: false, environment: ["UMOCKDEV_DIR": "/tmp/x"]) == .udevd,
                "umockdev delivers udev's events itself")
        #expect(HotplugSource.udevControl == "/run/udev/control")
        let here = HotplugSource.detect()
        #expect(here == (FileManager.default.fileExists(atPath: "/run/udev/control")
                         || ProcessInfo.processInfo.environment["UMOCKDEV_DIR"] != nil ? .udevd : .kernel))
    }
}
