import Foundation

/// A sysfs tree, mount table and /proc of our own, in the layout the kernel
/// uses, for tests of what the host itself uses (HostUse): a hub at 1-3 with
/// a storage device at 1-3.2 whose disk is sdb with partition sdb1 and a
/// keyboard at 1-3.1 (event7); a keyboard at 1-1 (event5, hidraw0); a sound
/// card at 1-4 (card1). The /proc has processes that hold nothing of these
/// until `hold` says so.
public struct FakeHostStorage {
    public let root: URL
    public var sysfsDevices: String { root.appendingPathComponent("sys/bus/usb/devices").path }
    public var mounts: String { root.appendingPathComponent("mounts").path }
    public var swaps: String { root.appendingPathComponent("swaps").path }
    public var proc: String { root.appendingPathComponent("proc").path }
    /// The sysfs directory of the USB devices (`1-3/1-3.2`, `1-1`).
    public var usb1: URL { root.appendingPathComponent("sys/devices/pci0000:00/usb1") }

    public init() throws {
        root = try makeTemporaryDirectory("usbredir-hostuse")
        let fm = FileManager.default
        let devices = root.appendingPathComponent("sys/devices/pci0000:00/usb1")
        let stick = devices.appendingPathComponent("1-3/1-3.2")
        let dirs = [
            "1-3/1-3.2/1-3.2:1.0/host2/target2:0:0/2:0:0:0/block/sdb/sdb1",
            "1-3/1-3:1.0",
            "1-3/1-3.1/1-3.1:1.0/0003:1234:0007.0002/input/input7/event7",
            "1-1/1-1:1.0/0003:1234:0001.0001/input/input5/event5",
            "1-1/1-1:1.0/0003:1234:0001.0001/hidraw/hidraw0",
            "1-4/1-4:1.0/sound/card1/controlC1",   // the control interface has the card
            "1-4/1-4:1.0/sound/card1/pcmC1D0p",
            "1-4/1-4:1.0/sound/card1/pcmC1D0c",
            "1-4/1-4:1.1",
        ]
        for d in dirs { try fm.createDirectory(at: devices.appendingPathComponent(d), withIntermediateDirectories: true) }
        let bus = root.appendingPathComponent("sys/bus/usb/devices")
        try fm.createDirectory(at: bus, withIntermediateDirectories: true)
        for port in ["1-1", "1-3", "1-3.1", "1-3.2", "1-4"] {
            let target = port == "1-3.2" ? stick : port == "1-3.1" ? devices.appendingPathComponent("1-3/1-3.1")
                : devices.appendingPathComponent(port)
            try fm.createSymbolicLink(at: bus.appendingPathComponent(port), withDestinationURL: target)
        }
        try setMounts("")
        try setSwaps("")
        // What a /proc has besides processes that hold our nodes: links and
        // files that are not processes, a process holding other files, one
        // whose fds are gone (a zombie).
        let p = root.appendingPathComponent("proc")
        try fm.createDirectory(at: p.appendingPathComponent("1"), withIntermediateDirectories: true)
        try fm.createSymbolicLink(atPath: p.appendingPathComponent("self").path, withDestinationPath: "1")
        try "0.01 0.02 0.00 1/99 1234\n".write(to: p.appendingPathComponent("loadavg"), atomically: true, encoding: .utf8)
        try hold("/dev/null", pid: 77, comm: "sshd", fd: 0)
        try hold("/dev/input/event50", pid: 77, comm: "sshd", fd: 1)
        try hold("socket:[4242]", pid: 77, comm: "sshd", fd: 2)
    }

    /// /proc/self/mounts lines, e.g. "/dev/sdb1 /mnt/stick vfat rw 0 0".
    public func setMounts(_ lines: String) throws {
        try ("sysfs /sys sysfs rw 0 0\n/dev/vda1 / ext4 rw 0 0\n" + lines).write(toFile: mounts, atomically: true, encoding: .utf8)
    }

    /// /proc/swaps entries after its header line.
    public func setSwaps(_ lines: String) throws {
        try ("Filename\tType\tSize\tUsed\tPriority\n" + lines).write(toFile: swaps, atomically: true, encoding: .utf8)
    }

    /// Process `pid` (named `comm`) has `target` open as `fd`: the link
    /// /proc/PID/fd/N the kernel shows, pointing nowhere real here.
    public func hold(_ target: String, pid: Int, comm: String, fd: Int = 3) throws {
        let dir = root.appendingPathComponent("proc/\(pid)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("fd"), withIntermediateDirectories: true)
        try "\(comm)\n".write(to: dir.appendingPathComponent("comm"), atomically: true, encoding: .utf8)
        let link = dir.appendingPathComponent("fd/\(fd)").path
        try? FileManager.default.removeItem(atPath: link)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
    }

    /// Closes what `hold` opened.
    public func release(pid: Int, fd: Int = 3) throws {
        try FileManager.default.removeItem(atPath: root.appendingPathComponent("proc/\(pid)/fd/\(fd)").path)
    }
}
