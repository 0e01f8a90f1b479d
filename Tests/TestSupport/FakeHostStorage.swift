import Foundation

/// A sysfs tree and mount table of our own, in the layout the kernel uses,
/// for tests of what the host itself uses (HostUse): a hub at 1-3 with a
/// storage device at 1-3.2 whose disk is sdb with partition sdb1, and a
/// device at 1-1 with no block device.
public struct FakeHostStorage {
    public let root: URL
    public var sysfsDevices: String { root.appendingPathComponent("sys/bus/usb/devices").path }
    public var mounts: String { root.appendingPathComponent("mounts").path }
    public var swaps: String { root.appendingPathComponent("swaps").path }

    public init() throws {
        root = try makeTemporaryDirectory("usbredir-hostuse")
        let fm = FileManager.default
        let devices = root.appendingPathComponent("sys/devices/pci0000:00/usb1")
        let stick = devices.appendingPathComponent("1-3/1-3.2")
        let scsi = stick.appendingPathComponent("1-3.2:1.0/host2/target2:0:0/2:0:0:0/block/sdb/sdb1")
        try fm.createDirectory(at: scsi, withIntermediateDirectories: true)
        try fm.createDirectory(at: devices.appendingPathComponent("1-3/1-3:1.0"), withIntermediateDirectories: true)
        try fm.createDirectory(at: devices.appendingPathComponent("1-1/1-1:1.0/0003:1234:0001.0001/input/input5"),
                               withIntermediateDirectories: true)
        let bus = root.appendingPathComponent("sys/bus/usb/devices")
        try fm.createDirectory(at: bus, withIntermediateDirectories: true)
        for port in ["1-1", "1-3", "1-3.2"] {
            let target = port == "1-3.2" ? stick : devices.appendingPathComponent(port)
            try fm.createSymbolicLink(at: bus.appendingPathComponent(port), withDestinationURL: target)
        }
        try setMounts("")
        try setSwaps("")
    }

    /// /proc/self/mounts lines, e.g. "/dev/sdb1 /mnt/stick vfat rw 0 0".
    public func setMounts(_ lines: String) throws {
        try ("sysfs /sys sysfs rw 0 0\n/dev/vda1 / ext4 rw 0 0\n" + lines).write(toFile: mounts, atomically: true, encoding: .utf8)
    }

    /// /proc/swaps entries after its header line.
    public func setSwaps(_ lines: String) throws {
        try ("Filename\tType\tSize\tUsed\tPriority\n" + lines).write(toFile: swaps, atomically: true, encoding: .utf8)
    }
}
