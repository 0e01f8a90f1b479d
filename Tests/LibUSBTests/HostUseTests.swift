import Devices
import Foundation
import Testing
import TestSupport

/// What the host itself uses, read from a sysfs tree, mount table and /proc
/// laid out as the kernel's (issue 19, guardrails). The lab-host suite checks the
/// same against a real kernel with a real mount.
@Suite struct HostUseTests {
    func probe(_ fake: FakeHostStorage) -> HostUse {
        HostUse(sysfsDevices: fake.sysfsDevices, mounts: fake.mounts, swaps: fake.swaps, proc: fake.proc)
    }

    @Test func aMountedPartitionOfAStickIsTheHostsWithWhereItIsMounted() throws {
        let fake = try FakeHostStorage()
        #expect(probe(fake).reason(port: "1-3.2") == nil, "nothing mounted yet")
        try fake.setMounts("/dev/sdb1 /mnt/lab\\040stick vfat rw,relatime 0 0\n")
        #expect(probe(fake).reason(port: "1-3.2") == "/dev/sdb1 mounted on /mnt/lab stick")
        // The hub above it and a device without storage are not in use.
        #expect(probe(fake).reason(port: "1-3") == nil)
        #expect(probe(fake).reason(port: "1-1") == nil)
        #expect(probe(fake).reason(port: "2-9") == nil, "a port with no device")
    }

    @Test func aWholeDiskMountOrASwapAreaCountToo() throws {
        let fake = try FakeHostStorage()
        try fake.setMounts("/dev/sdb /media/disk ext4 rw 0 0\n")
        #expect(probe(fake).reason(port: "1-3.2") == "/dev/sdb mounted on /media/disk")
        try fake.setMounts("/dev/sdbx /elsewhere ext4 rw 0 0\n/dev/vdb1 /data ext4 rw 0 0\n")
        #expect(probe(fake).reason(port: "1-3.2") == nil, "another disk's name is not ours")
        try fake.setSwaps("/dev/sdb1                               partition\t2097148\t0\t-2\n")
        #expect(probe(fake).reason(port: "1-3.2") == "/dev/sdb1 in use as swap")
    }

    @Test func reasonsAreByPortPath() throws {
        let fake = try FakeHostStorage()
        try fake.setMounts("/dev/sdb1 /mnt ext4 rw 0 0\n")
        let devices = ["1-1", "1-3", "1-3.2"].enumerated().map { i, port in
            USBDeviceInfo(vendorID: 0x1234, productID: UInt16(i), deviceClass: 0, serial: nil, manufacturer: nil,
                          productName: nil, bus: 1, port: port, address: i + 2, speed: .high)
        }
        #expect(probe(fake).reasons(for: devices) == ["1-3.2": "/dev/sdb1 mounted on /mnt"])
    }

    // Input devices and sound cards: in use while a process holds one of
    // their nodes open, not merely because they are there.

    @Test func aKeyboardWhoseEventNodeIsHeldOpenIsTheHostsWithWhoHoldsIt() throws {
        let fake = try FakeHostStorage()
        try fake.hold("/dev/input/event5", pid: 812, comm: "Xorg")
        #expect(probe(fake).reason(port: "1-1") == "/dev/input/event5 held open by Xorg (pid 812)")
        try fake.release(pid: 812)
        try fake.hold("/dev/hidraw0", pid: 990, comm: "fido-agent", fd: 7)
        #expect(probe(fake).reason(port: "1-1") == "/dev/hidraw0 held open by fido-agent (pid 990)")
    }

    @Test func aKeyboardNobodyHoldsOpenIsNotInUse() throws {
        // A headless lab host: the keyboard is there, its nodes are closed
        // (the fake's sshd holds /dev/null and event50, not event5).
        let fake = try FakeHostStorage()
        #expect(probe(fake).personNodes(port: "1-1") == ["/dev/hidraw0", "/dev/input/event5"])
        #expect(probe(fake).reason(port: "1-1") == nil)
        #expect(probe(fake).reasons(for: [device("1-1")]).isEmpty)
    }

    @Test func aSoundCardWhosePCMNodeIsHeldOpenIsTheHosts() throws {
        let fake = try FakeHostStorage()
        #expect(probe(fake).reason(port: "1-4") == nil)
        try fake.hold("/dev/snd/pcmC1D0p", pid: 1500, comm: "pipewire", fd: 31)
        #expect(probe(fake).reason(port: "1-4") == "/dev/snd/pcmC1D0p held open by pipewire (pid 1500)")
        #expect(probe(fake).reason(port: "1-1") == nil, "another device's node")
    }

    @Test func aHubIsNotHeldByItsChildDevicesNodes() throws {
        let fake = try FakeHostStorage()
        try fake.hold("/dev/input/event7", pid: 812, comm: "Xorg")
        #expect(probe(fake).reason(port: "1-3.1") == "/dev/input/event7 held open by Xorg (pid 812)")
        #expect(probe(fake).reason(port: "1-3") == nil)
    }

    @Test func aMountIsTheReasonBeforeAHeldNode() throws {
        // A stick with a HID interface too (a security key with storage).
        let fake = try FakeHostStorage()
        try FileManager.default.createDirectory(
            at: fake.usb1.appendingPathComponent("1-3/1-3.2/1-3.2:1.1/0003:1234:0002.0003/hidraw/hidraw3"),
            withIntermediateDirectories: true)
        try fake.hold("/dev/hidraw3", pid: 990, comm: "fido-agent")
        try fake.setMounts("/dev/sdb1 /mnt ext4 rw 0 0\n")
        #expect(probe(fake).reason(port: "1-3.2") == "/dev/sdb1 mounted on /mnt")
        try fake.setMounts("")
        #expect(probe(fake).reason(port: "1-3.2") == "/dev/hidraw3 held open by fido-agent (pid 990)")
    }

    @Test func reasonsNameEachDeviceTheHostUsesInOnePass() throws {
        let fake = try FakeHostStorage()
        try fake.setMounts("/dev/sdb1 /mnt ext4 rw 0 0\n")
        try fake.hold("/dev/input/event5", pid: 812, comm: "Xorg")
        try fake.hold("/dev/snd/pcmC1D0c", pid: 1500, comm: "pipewire")
        let all = ["1-1", "1-3", "1-3.1", "1-3.2", "1-4"].map(device)
        #expect(probe(fake).reasons(for: all) == [
            "1-1": "/dev/input/event5 held open by Xorg (pid 812)",
            "1-3.2": "/dev/sdb1 mounted on /mnt",
            "1-4": "/dev/snd/pcmC1D0c held open by pipewire (pid 1500)",
        ])
    }

    @Test func theNodesOfADeviceAreNamedAsUdevNamesThem() throws {
        let fake = try FakeHostStorage()
        let base = fake.usb1.appendingPathComponent("1-1/1-1:1.0/0003:1234:0001.0001/input")
        for d in ["input6/mouse0", "input8/js1", "input6/input6::capslock"] {
            try FileManager.default.createDirectory(at: base.appendingPathComponent(d), withIntermediateDirectories: true)
        }
        try FileManager.default.createDirectory(at: fake.usb1.appendingPathComponent("1-4/1-4:1.0/sound/card1/midiC1D0"),
                                                withIntermediateDirectories: true)
        let hostUse = HostUse(sysfsDevices: fake.sysfsDevices, dev: "/run/devs")
        #expect(hostUse.personNodes(port: "1-1") == [
            "/run/devs/hidraw0", "/run/devs/input/event5", "/run/devs/input/js1", "/run/devs/input/mouse0",
        ])
        #expect(hostUse.personNodes(port: "1-4") == [
            "/run/devs/snd/controlC1", "/run/devs/snd/midiC1D0", "/run/devs/snd/pcmC1D0c", "/run/devs/snd/pcmC1D0p",
        ])
        #expect(hostUse.personNodes(port: "1-3").isEmpty && hostUse.personNodes(port: "1-3.2").isEmpty)
    }

    @Test func theKernelsProcShowsANodeThisProcessHoldsOpen() throws {
        // The real /proc, with a node of our own: a file where the fake
        // keyboard's event5 would be, held open here.
        let fake = try FakeHostStorage()
        let dev = fake.root.resolvingSymlinksInPath().appendingPathComponent("dev")   // as the kernel shows it
        try FileManager.default.createDirectory(at: dev.appendingPathComponent("input"), withIntermediateDirectories: true)
        let node = dev.appendingPathComponent("input/event5").path
        #expect(FileManager.default.createFile(atPath: node, contents: nil))
        let hostUse = HostUse(sysfsDevices: fake.sysfsDevices, dev: dev.path)
        #expect(hostUse.reason(port: "1-1") == nil)
        let fd = open(node, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        let why = hostUse.reason(port: "1-1") ?? ""
        #expect(why.hasPrefix("\(node) held open by ") && why.hasSuffix(" (pid \(getpid()))"), "\(why)")
    }

    func device(_ port: String) -> USBDeviceInfo {
        USBDeviceInfo(vendorID: 0x1234, productID: 1, deviceClass: 0, serial: nil, manufacturer: nil,
                      productName: nil, bus: 1, port: port, address: 2, speed: .full)
    }
}
