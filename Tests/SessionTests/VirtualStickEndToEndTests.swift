import Devices
import Foundation
import Session
import Testing
import TestSupport

/// A real Linux guest reads and writes a virtual stick served by the tool.
@Suite(.serialized, .requires(.qemu), .timeLimit(.minutes(10)))
struct VirtualStickEndToEndTests {
    static let readMiB = 64

    func readTest(_ link: GuestLink, label: String, superSpeed: Bool = false, uas: Bool = false) async throws {
        let dir = try makeTemporaryDirectory("usbredir-e2e")
        let image = try makeRandomImage(mib: Self.readMiB, in: dir)
        let session = RedirectionSession(name: "stick", logger: testLogger)
        try await session.plug(MassStorageDevice(imagePath: image, readOnly: true, serial: "E2E0001", superSpeed: superSpeed,
                                                 offersUAS: uas))
        let (report, _) = try await runGuest(append: "usbtest=read usbtest.mib=\(Self.readMiB)", link: link, session: session)
        // Which driver the guest bound: uas only when the stick offers it.
        #expect(report.line("usb-interface 0525:a4a5")?.hasSuffix(uas ? "alt=1 driver=uas" : "alt=0 driver=usb-storage") == true,
                "guest report:\n\(report)")
        #expect(report.value("sha256") == (try sha256(ofFile: image)), "guest report:\n\(report)")
        // The speed the guest's kernel gave the device (Mb/s, sysfs).
        #expect(report.line("usb-device 0525:a4a5")?.hasSuffix("speed=\(superSpeed ? 5000 : 480)") == true,
                "guest report:\n\(report)")
        let counters = await session.counters
        #expect(counters.bytesIn >= Self.readMiB << 20)
        print("E2E \(label): guest read \(Self.readMiB) MiB at \(report.value("mbps") ?? "?") MB/s")
    }

    @Test func guestReadsA64MiBStickOverSpiceOnXHCI() async throws {
        try await readTest(.spice(controller: "qemu-xhci"), label: "spice/qemu-xhci")
    }

    /// SuperSpeed on xhci: the guest sends 1 MiB commands.
    @Test func guestReadsA64MiBSuperSpeedStickOverSpiceOnXHCI() async throws {
        try await readTest(.spice(controller: "qemu-xhci"), label: "spice/qemu-xhci, SuperSpeed stick", superSpeed: true)
    }

    /// UAS on xhci: commands queued on bulk streams (stream = tag).
    @Test func guestReadsA64MiBUASStickOverSpiceOnXHCI() async throws {
        try await readTest(.spice(controller: "qemu-xhci"), label: "spice/qemu-xhci, UAS stick", superSpeed: true, uas: true)
    }

    @Test func guestReadsA64MiBStickOverSpiceOnEHCI() async throws {
        try await readTest(.spice(controller: "usb-ehci"), label: "spice/ehci")
    }

    @Test func guestReadsA64MiBStickOverRawTCP() async throws {
        try await readTest(.raw(controller: "qemu-xhci"), label: "raw-tcp/qemu-xhci")
    }

    @Test func nativeUSBStorageBaselineForComparison() async throws {
        let dir = try makeTemporaryDirectory("usbredir-native")
        let image = try makeRandomImage(mib: Self.readMiB, in: dir)
        var o = try Guest.options(append: "usbtest=read usbtest.mib=\(Self.readMiB)")
        o.nativeImage = image
        let vm = try QEMUVM(o)
        defer { vm.stop() }
        #expect(await vm.exited(within: 120))
        let report = GuestReport(serial: vm.serial)
        #expect(report.value("sha256") == (try sha256(ofFile: image)))
        print("E2E native usb-storage/qemu-xhci: guest read \(Self.readMiB) MiB at \(report.value("mbps") ?? "?") MB/s")
    }

    @Test func guestWritesReachTheImageFile() async throws {
        try await writeTest(superSpeed: false)
    }

    @Test func guestWritesReachTheImageFileOfAUASStick() async throws {
        try await writeTest(superSpeed: true, uas: true)
    }

    /// 1 MiB WRITE commands, their data in many bulk OUT packets.
    @Test func guestWritesReachTheImageFileOfASuperSpeedStick() async throws {
        try await writeTest(superSpeed: true)
    }

    func writeTest(superSpeed: Bool, uas: Bool = false) async throws {
        let dir = try makeTemporaryDirectory("usbredir-e2e-write")
        let image = try makeRandomImage(mib: 32, in: dir)
        let session = RedirectionSession(name: "stick", logger: testLogger)
        try await session.plug(MassStorageDevice(imagePath: image, readOnly: false, serial: "E2E0002", superSpeed: superSpeed,
                                                 offersUAS: uas))
        let (report, _) = try await runGuest(append: "usbtest=write usbtest.mib=16 usbtest.seed=e2e", link: .spice(controller: "qemu-xhci"),
                                             session: session)
        #expect(report.has("write-status=ok"), "guest report:\n\(report)")
        await session.unplug()
        let expected = try guestPatternSHA256(seed: "e2e", mib: 16)
        #expect(try sha256(ofFile: image, bytes: 16 << 20) == expected)
        #expect(report.line("usb-device 0525:a4a5")?.hasSuffix("speed=\(superSpeed ? 5000 : 480)") == true)
        #expect(report.line("usb-interface 0525:a4a5")?.hasSuffix(uas ? "driver=uas" : "driver=usb-storage") == true,
                "guest report:\n\(report)")
        print("E2E write over spice/qemu-xhci\(superSpeed ? ", SuperSpeed stick" : "")\(uas ? ", UAS" : ""): "
              + "\(report.line("written") ?? "?")")
    }

    @Test func aReadOnlyStickRefusesWritesAndTheFileIsUnchanged() async throws {
        let dir = try makeTemporaryDirectory("usbredir-e2e-ro")
        let image = try makeRandomImage(mib: 8, in: dir)
        let before = try sha256(ofFile: image)
        let session = RedirectionSession(name: "stick", logger: testLogger)
        try await session.plug(MassStorageDevice(imagePath: image, readOnly: true, serial: "E2E0003"))
        let (report, _) = try await runGuest(append: "usbtest=write usbtest.mib=4 usbtest.seed=ro usbtest.wait=30",
                                             link: .spice(controller: "qemu-xhci"), session: session)
        // The disk must have appeared (a guest without it also reports
        // write-status=error), with the image's size, and the write must
        // have been refused because the kernel saw it write-protected
        // (MODE SENSE WP bit). The stick's own DATA PROTECT answer to a
        // WRITE, which the kernel never sends here, is checked by
        // MassStorageProtocolTests.
        let disk = try #require(report.line("disk name=").flatMap { _ in report.value("name") },
                                "no disk appeared in the guest:\n\(report)")
        #expect(report.line("disk name=") == "disk name=\(disk) size=\(8 << 20)", "guest report:\n\(report)")
        #expect(report.has("write-error disk=\(disk) read-only"), "guest report:\n\(report)")
        #expect(report.has("write-status=error"), "guest report:\n\(report)")
        #expect(try sha256(ofFile: image) == before)
    }

    @Test func unplugMidReadDropsTheDiskAndReplugBringsItBack() async throws {
        let dir = try makeTemporaryDirectory("usbredir-e2e-plug")
        let image = try makeRandomImage(mib: 16, in: dir)
        let session = RedirectionSession(name: "stick", logger: testLogger)
        let stick = try MassStorageDevice(imagePath: image, readOnly: true, serial: "E2E0004")
        try await session.plug(stick)
        let (report, _) = try await runGuest(
            append: "usbtest=watch usbtest.readloop=1 usbtest.mib=16 usbtest.wait=40", link: .spice(controller: "qemu-xhci"),
            session: session
        ) { vm in
            #expect(await vm.serialContains("read-pass", within: 60), "no read pass:\n\(GuestReport(serial: vm.serial))")
            await session.unplug()          // in the middle of the read loop
            #expect(await vm.serialContains("disk-removed", within: 15), "\(GuestReport(serial: vm.serial))")
            let again = try MassStorageDevice(imagePath: image, readOnly: true, serial: "E2E0004")
            try await session.plug(again)
            let deadline = Date().addingTimeInterval(20)
            while GuestReport(serial: vm.serial).lines.filter({ $0.hasPrefix("disk-added") }).count < 2, Date() < deadline {
                try await Task.sleep(nanoseconds: 100_000_000)
            }
            vm.stop()
        }
        let added = report.lines.filter { $0.hasPrefix("disk-added") }.count
        #expect(added == 2, "guest report:\n\(report)")
        #expect(report.has("disk-removed"))
    }
}
