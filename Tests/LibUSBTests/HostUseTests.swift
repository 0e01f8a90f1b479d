import Devices
import Foundation
import Testing
import TestSupport

/// What the host itself uses, read from a sysfs tree and mount table laid
/// out as the kernel's (issue 19, guardrails). The lab-host suite checks the
/// same against a real kernel with a real mount.
@Suite struct HostUseTests {
    func probe(_ fake: FakeHostStorage) -> HostUse {
        HostUse(sysfsDevices: fake.sysfsDevices, mounts: fake.mounts, swaps: fake.swaps)
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
}
