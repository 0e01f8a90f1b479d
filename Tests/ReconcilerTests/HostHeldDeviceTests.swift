import Devices
import Foundation
import Logging
import Profile
import Reconciler
import Testing
import TestSupport

/// A broad rule does not take a device the host itself uses (a mounted file
/// system on it); plan and status say why; `take-from-host: true` takes it
/// anyway (issue 19, guardrails). The host's use is read from a sysfs tree
/// and mount table of the test's own (FakeHostStorage).
@Suite(.serialized, .timeLimit(.minutes(1))) struct HostHeldDeviceTests {
    let stick = USBDeviceInfo(vendorID: 0x1234, productID: 2, deviceClass: 0, serial: "S1", manufacturer: nil,
                              productName: nil, bus: 1, port: "1-3.2", address: 5, speed: .high)

    func profile(take: Bool) throws -> Profile {
        try loadValidProfile("version: 1\nendpoints:\n  e0: {listen: 127.0.0.1:\(freeLoopbackPort())}\ndevices:\n"
            + "  - {name: sticks, to: e0, match: {vendor: 0x1234}\(take ? ", take-from-host: true" : "")}\n")
    }

    /// The stick mounted at /mnt in a host of the test's own, and a
    /// reconciler that sees it there.
    func mountedStick() throws -> (FakeHostStorage, HostUse, Reconciler) {
        let fake = try FakeHostStorage()
        try fake.setMounts("/dev/sdb1 /mnt ext4 rw 0 0\n")
        let hostUse = HostUse(sysfsDevices: fake.sysfsDevices, mounts: fake.mounts, swaps: fake.swaps, proc: fake.proc)
        let reconciler = Reconciler(monitor: FixedDevicesMonitor(devices: [stick]), environment: [:],
                                    logger: Logger(label: "test"), hostUse: hostUse)
        return (fake, hostUse, reconciler)
    }

    @Test func aMountedStickIsLeftToTheHostUntilUnmountedOrTakenExplicitly() async throws {
        let (fake, hostUse, reconciler) = try mountedStick()
        let broad = try profile(take: false)

        // plan and apply agree: no device, and why.
        let plan = Plan.make(broad, present: [stick], running: nil, hostUse: hostUse.reasons(for: [stick]))
        let held = HostHeldDevice(assignment: "sticks", device: "1234:0002@1-3.2", reason: "/dev/sdb1 mounted on /mnt")
        #expect(plan.assignments.first?.device == nil)
        #expect(plan.heldByHost == [held])
        await reconciler.apply(broad)
        #expect(await reconciler.status().first?.device == nil)
        #expect(await reconciler.report().heldByHost == [held])
        #expect(held.text.contains("in use by the host: /dev/sdb1 mounted on /mnt"))

        // Unmounted: the next pass takes it.
        try fake.setMounts("")
        await reconciler.reconcile()
        #expect(await reconciler.status().first?.device == "1234:0002@1-3.2")
        #expect(await reconciler.report().heldByHost.isEmpty)
        await reconciler.shutdown()
    }

    @Test func takeFromHostTakesAMountedStick() async throws {
        let (_, hostUse, reconciler) = try mountedStick()
        let taking = try profile(take: true)
        let plan = Plan.make(taking, present: [stick], running: nil, hostUse: hostUse.reasons(for: [stick]))
        #expect(plan.assignments.first?.device == "1234:0002@1-3.2" && plan.heldByHost.isEmpty)
        await reconciler.apply(taking)
        #expect(await reconciler.status().first?.device == "1234:0002@1-3.2")
        await reconciler.shutdown()
    }

    @Test func aKeyboardHeldOpenIsLeftToTheHostUntilClosedOrTakenExplicitly() async throws {
        let fake = try FakeHostStorage()
        try fake.hold("/dev/input/event5", pid: 812, comm: "Xorg")
        let hostUse = HostUse(sysfsDevices: fake.sysfsDevices, mounts: fake.mounts, swaps: fake.swaps, proc: fake.proc)
        let keyboard = USBDeviceInfo(vendorID: 0x1234, productID: 1, deviceClass: 0, serial: nil, manufacturer: nil,
                                     productName: nil, bus: 1, port: "1-1", address: 2, speed: .low)
        let reconciler = Reconciler(monitor: FixedDevicesMonitor(devices: [keyboard]), environment: [:],
                                    logger: Logger(label: "test"), hostUse: hostUse)
        let plan = Plan.make(try profile(take: false), present: [keyboard], running: nil,
                             hostUse: hostUse.reasons(for: [keyboard]))
        #expect(plan.assignments.first?.device == nil)
        #expect(plan.heldByHost == [HostHeldDevice(assignment: "sticks", device: "1234:0001@1-1",
                                                   reason: "/dev/input/event5 held open by Xorg (pid 812)")])
        let taking = Plan.make(try profile(take: true), present: [keyboard], running: nil,
                               hostUse: hostUse.reasons(for: [keyboard]))
        #expect(taking.assignments.first?.device == "1234:0001@1-1" && taking.heldByHost.isEmpty)

        // Closed (Xorg gone): apply takes it.
        try fake.release(pid: 812)
        await reconciler.apply(try profile(take: false))
        #expect(await reconciler.status().first?.device == "1234:0001@1-1")
        #expect(await reconciler.report().heldByHost.isEmpty)
        await reconciler.shutdown()
    }

    @Test func onlyDevicesARuleWouldTakeAreAskedOfTheHost() throws {
        // The /proc scan for a keyboard is for profiles that could take it.
        let keyboard = USBDeviceInfo(vendorID: 0x4321, productID: 1, deviceClass: 0, serial: nil, manufacturer: nil,
                                     productName: nil, bus: 1, port: "1-1", address: 2, speed: .low)
        #expect(DeviceChoice.guarded(try profile(take: false), present: [stick, keyboard]) == [stick])
        #expect(DeviceChoice.guarded(try profile(take: true), present: [stick, keyboard]).isEmpty)
    }

    @Test func takeFromHostIsForMatchedDevicesOnlyAndABoolean() throws {
        let dir = try makeTemporaryDirectory("usbredir-held-diag")
        let path = dir.appendingPathComponent("bad.yaml").path
        try """
        version: 1
        endpoints:
          e0: {listen: 127.0.0.1:4000}
          e1: {listen: 127.0.0.1:4001}
        devices:
          - name: img
            to: e0
            take-from-host: true
            virtual: {kind: source-sink}
          - name: s
            to: e1
            match: {vendor: 0x1234}
            take-from-host: "yes"

        """.write(toFile: path, atomically: true, encoding: .utf8)
        let errors = ProfileLoader.load(path: path, hostname: "nohost").errors.map(\.description)
        #expect(errors.contains { $0.hasPrefix("\(path):8:5: error:") && $0.contains("take-from-host is for matched physical devices") },
                "\(errors)")
        #expect(errors.contains { $0.hasPrefix("\(path):13:21: error:") && $0.contains("true or false") }, "\(errors)")
    }
}
