import Devices
import Foundation
import TestSupport
import XCTest

/// The whole chain with an emulated physical device: umockdev's stick model
/// (testbed.py) <- libusb <- `usbredir apply`, run as a process under
/// umockdev-wrapper <- SPICE usbredir channel <- QEMU <- a Linux guest,
/// which reads the stick and hashes it. Then replug with one apply process.
///
/// Unlike the other LibUSBTests, the test process itself stays outside
/// umockdev: it drives the testbed over its control socket, and only the
/// apply process runs under the wrapper, with UMOCKDEV_DIR set explicitly.
final class PhysicalChainEndToEndTests: XCTestCase {
    static let imageMiB = 4

    /// Each test as a whole has a deadline: a hang fails it (every wait
    /// inside is bounded too, this catches what is not).
    static let deadline: Double = 300

    func testGuestReadsTheEmulatedStickMatchedByIDOnXHCI() async throws {
        try await withDeadline(Self.deadline, "the chain read on qemu-xhci") {
            try await Self.readThroughTheChain(controller: "qemu-xhci", match: "vendor: 0x0951\n      product: 0x1666")
        }
    }

    func testGuestReadsTheEmulatedStickMatchedByPortOnEHCI() async throws {
        try await withDeadline(Self.deadline, "the chain read on usb-ehci") {
            try await Self.readThroughTheChain(controller: "usb-ehci", match: "port: \"1-1.1\"")
        }
    }

    /// Apply runs before the stick exists; plug, unplug and plug again: the
    /// guest sees the stick, drops it, and sees (and reads) it again, all
    /// with the same apply process, and `status` follows.
    func testReplugWithTheSameApplyProcess() async throws {
        try await withDeadline(Self.deadline, "the replug test") { try await Self.replug() }
    }

    static func replug() async throws {
        try Self.requireTools()
        let lab = try ChainLab(absent: ["stick"],
                               match: "vendor: 0x0951\n      product: 0x1666\n      serial: STICK0001")
        defer { lab.stop() }
        var options = try Guest.options(append: "usbtest=watch usbtest.wait=50 usbtest.readloop=1 usbtest.mib=\(Self.imageMiB)")
        options.spicePort = lab.spicePort
        options.usbredirChannels = 1
        let vm = try QEMUVM(options)
        defer { vm.stop() }
        let apply = try lab.startApply()
        let pid = apply.process.processIdentifier
        func context() -> String { "guest:\n\(GuestReport(serial: vm.serial))\napply:\n\(apply.log.suffix(4000))\ntestbed:\n\(lab.testbed.log)" }
        func lines(_ prefix: String) -> [String] { GuestReport(serial: vm.serial).lines.filter { $0.hasPrefix(prefix) } }

        // No stick yet: the session is up and waits for a device.
        let waiting = try await lab.waitForStatus(15) { $0.state == "waiting-for-device" && $0.device == nil }
        XCTAssertTrue(waiting, "status: \(String(describing: try? lab.status()))\n\(context())")
        let booted = await vm.serialContains("USBTEST boot", within: 20)
        XCTAssertTrue(booted, context())
        XCTAssertTrue(lines("disk-added").isEmpty, context())

        // Plug: the guest gets a disk and reads it.
        var start = Date()
        try lab.control("plug stick")
        let added = await vm.serialContains("disk-added", within: 20)
        XCTAssertTrue(added, context())
        let firstSeconds = Date().timeIntervalSince(start)
        let plugged = try await lab.waitForStatus(5) { $0.state == "connected" && $0.device == "0951:1666@1-1.1" }
        XCTAssertTrue(plugged, "status: \(String(describing: try? lab.status()))")
        let reading = await vm.serialContains("read-pass", within: 20)
        XCTAssertTrue(reading, context())

        // Unplug in the middle of the read loop: the guest drops the disk.
        start = Date()
        try lab.control("unplug stick")
        let removed = await vm.serialContains("disk-removed", within: 15)
        XCTAssertTrue(removed, context())
        let removedSeconds = Date().timeIntervalSince(start)
        let unplugged = try await lab.waitForStatus(5) { $0.state == "waiting-for-device" && $0.device == nil }
        XCTAssertTrue(unplugged, "status: \(String(describing: try? lab.status()))")
        XCTAssertTrue(apply.isAlive, context())

        // Plug again: a second disk-added, and reads work on it.
        start = Date()
        try lab.control("plug stick")
        let deadline = Date().addingTimeInterval(20)
        while lines("disk-added").count < 2, Date() < deadline, vm.isAlive { try await Task.sleep(nanoseconds: 100_000_000) }
        XCTAssertEqual(lines("disk-added").count, 2, context())
        let againSeconds = Date().timeIntervalSince(start)
        let replugged = try await lab.waitForStatus(5) { $0.state == "connected" && $0.device == "0951:1666@1-1.1" }
        XCTAssertTrue(replugged, "status: \(String(describing: try? lab.status()))")
        let readAgain = Date().addingTimeInterval(20)
        func readsAfterReplug() -> Int {
            let all = GuestReport(serial: vm.serial).lines
            guard let second = all.indices.filter({ all[$0].hasPrefix("disk-added") }).dropFirst().first else { return 0 }
            return all[second...].filter { $0.hasPrefix("read-pass") }.count
        }
        while readsAfterReplug() == 0, Date() < readAgain, vm.isAlive { try await Task.sleep(nanoseconds: 100_000_000) }
        XCTAssertGreaterThan(readsAfterReplug(), 0, context())

        // One apply process throughout, which bound the device twice.
        XCTAssertTrue(apply.isAlive)
        XCTAssertEqual(apply.process.processIdentifier, pid)
        XCTAssertEqual(apply.log.components(separatedBy: "device bound").count - 1, 2, context())
        print("CHAIN replug: disk-added \(String(format: "%.1f", firstSeconds)) s after plug, "
              + "disk-removed \(String(format: "%.1f", removedSeconds)) s after unplug, "
              + "disk-added again \(String(format: "%.1f", againSeconds)) s after the second plug")

        vm.stop()
        apply.signal(SIGTERM)
        let status = await apply.waitForExit(timeout: 10)
        XCTAssertEqual(status, 0, context())
    }

    /// `usbredir attach VID:PID`: the physical device leaving ends attach
    /// with status 0 and a "device left" line. (A listen endpoint nobody
    /// dials: the device is bound, claimed and held without a VM.)
    func testAttachExitsZeroWhenThePhysicalDeviceLeaves() async throws {
        try Self.requireTools()
        let lab = try ChainLab(absent: [], match: "vendor: 0x0951")
        defer { lab.stop() }
        var environment = ProcessInfo.processInfo.environment
        environment["UMOCKDEV_DIR"] = lab.testbed.root
        let attach = try BackgroundProcess(
            Umockdev.wrapper, [builtProduct("usbredir"), "attach", "0951:1666", "--to", "listen://127.0.0.1:\(freeLoopbackPort())",
                               "--socket", lab.socket],
            logFile: lab.dir.appendingPathComponent("attach.log"), environment: environment)
        defer { attach.signal(SIGKILL) }
        func context() -> String { "attach:\n\(attach.log.suffix(4000))\ntestbed:\n\(lab.testbed.log)" }

        let bound = await waitUntil(timeout: 30, interval: 0.05) { attach.log.contains("device 0951:1666@1-1.1") }
        XCTAssertNotNil(bound, context())
        let claimed = await waitUntil(timeout: 10, interval: 0.05) { (try? lab.state("stick").claimed) == [0] }
        XCTAssertNotNil(claimed, context())

        try lab.control("unplug stick")
        let status = await attach.waitForExit(timeout: 15)
        XCTAssertEqual(status, 0, context())
        XCTAssertTrue(attach.log.contains("device left"), context())
    }

    // MARK: - The read test

    static func readThroughTheChain(controller: String, match: String) async throws {
        try Self.requireTools()
        let lab = try ChainLab(absent: [], match: match)
        defer { lab.stop() }
        var options = try Guest.options(append: "usbtest=read usbtest.mib=\(Self.imageMiB) usbtest.wait=30 usbtest.dmesg=1")
        options.controller = controller
        options.spicePort = lab.spicePort
        options.usbredirChannels = 1
        let started = Date()
        let vm = try QEMUVM(options)
        defer { vm.stop() }
        let apply = try lab.startApply()
        func context() -> String { "guest:\n\(GuestReport(serial: vm.serial))\napply:\n\(apply.log.suffix(4000))\ntestbed:\n\(lab.testbed.log)" }

        // The device is redirected while the guest runs: status names it.
        let bound = try await lab.waitForStatus(30) { $0.state == "connected" && $0.device == "0951:1666@1-1.1" }
        XCTAssertTrue(bound, "status: \(String(describing: try? lab.status()))\n\(context())")

        let finished = await vm.exited(within: 45)
        XCTAssertTrue(finished, "the guest did not finish\n\(context())")
        // Apply still holds the stick: claimed, its kernel driver detached.
        // (Looked at once the guest is done: while it enumerates, its
        // SET_CONFIGURATION has apply release and claim again.)
        let held = try lab.state("stick")
        XCTAssertEqual(held.claimed, [0])
        XCTAssertEqual(held.drivers, [:])
        let seconds = Date().timeIntervalSince(started)
        let report = GuestReport(serial: vm.serial)
        XCTAssertEqual(report.value("sha256"), try sha256(ofFile: lab.image), context())
        XCTAssertTrue(report.has("usb-device 0951:1666"), context())
        XCTAssertEqual(report.value("size"), "\(Self.imageMiB << 20)", context())
        // The guest's SCSI and USB layers never had to recover: every command
        // the model got, it answered (no failed command, no reset, no I/O error).
        let kernelLog = vm.serial.split(whereSeparator: \.isNewline).filter { $0.contains("KLOG") }
        let trouble = kernelLog.filter { $0.contains("Sense Key") || $0.contains("reset high-speed") || $0.contains("I/O error") }
        XCTAssertEqual(trouble, [], context())

        // Every byte went through apply: the guest read the stick twice (timed, then hashed).
        XCTAssertGreaterThanOrEqual(try lab.status()?.bytes_in ?? 0, 2 * Self.imageMiB << 20)

        // The keyboard next to it was left alone.
        let keyboard = try lab.state("keyboard")
        XCTAssertEqual(keyboard.claimed, [])
        XCTAssertEqual(keyboard.drivers, ["0": "usbhid"])

        // SIGTERM: apply ends cleanly and gives the stick back to its kernel driver.
        apply.signal(SIGTERM)
        let status = await apply.waitForExit(timeout: 10)
        XCTAssertEqual(status, 0, context())
        let released = try lab.state("stick")
        XCTAssertEqual(released.claimed, [])
        XCTAssertEqual(released.drivers, ["0": "usb-storage"])
        XCTAssertEqual(released.attached, [0])

        print("CHAIN \(controller) (match \(match.replacingOccurrences(of: "\n      ", with: ", "))): guest read "
              + "\(Self.imageMiB) MiB of the emulated stick at \(report.value("mbps") ?? "?") MB/s; "
              + "whole run \(String(format: "%.1f", seconds)) s; SCSI commands: \(try lab.control("state stick").commandCounts)")
    }

    /// Returns when umockdev and QEMU are there. CI must have them
    /// (scripts/install-deps.sh --all): a missing one fails the test there;
    /// elsewhere the test is skipped with the reason (TestSupport's Requirement).
    static func requireTools() throws {
        try Requirement.all(Umockdev.requirement, .qemu).xctGate()
    }
}

/// One run's pieces: the stick's random image, the testbed serving the
/// emulated bus, the profile, and the apply process under umockdev.
final class ChainLab {
    struct Session: Decodable {
        var name: String
        var device: String?
        var state: String
        var bytes_in: Int
    }

    private struct Report: Decodable { var sessions: [Session] }

    let dir: URL
    let image: String
    let controlPath: String
    let socket: String
    let profile: URL
    let spicePort: Int
    let testbed: Testbed
    private var apply: BackgroundProcess?

    init(absent: [String], match: String) throws {
        dir = try makeTemporaryDirectory("usbredir-chain")
        image = try makeRandomImage(mib: PhysicalChainEndToEndTests.imageMiB, in: dir)
        controlPath = dir.appendingPathComponent("control").path
        socket = dir.appendingPathComponent("status.sock").path
        profile = dir.appendingPathComponent("chain.yaml")
        spicePort = freeLoopbackPort()
        try """
            version: 1
            endpoints:
              vm:
                spice: 127.0.0.1:\(spicePort)
            devices:
              - name: stick
                to: vm
                match:
                  \(match)

            """.write(to: profile, atomically: true, encoding: .utf8)
        testbed = try Testbed(script: Umockdev.testbedScript, image: image, control: controlPath, absent: absent)
    }

    /// `usbredir apply` under umockdev-wrapper, with the testbed's UMOCKDEV_DIR.
    func startApply() throws -> BackgroundProcess {
        var environment = ProcessInfo.processInfo.environment
        environment["UMOCKDEV_DIR"] = testbed.root
        let process = try BackgroundProcess(
            Umockdev.wrapper, [builtProduct("usbredir"), "apply", "--log-level", "debug", "--socket", socket, profile.path],
            logFile: dir.appendingPathComponent("apply.log"), environment: environment)
        apply = process
        return process
    }

    @discardableResult
    func control(_ command: String) throws -> String { try TestbedControl.send(command, to: controlPath) }

    func state(_ device: String) throws -> TestbedControl.ModelState {
        try JSONDecoder().decode(TestbedControl.ModelState.self, from: Data(control("state \(device)").utf8))
    }

    /// The stick assignment's entry in `usbredir status --json`.
    func status() throws -> Session? {
        let out = try runCommand(builtProduct("usbredir"), ["status", "--json", "--socket", socket])
        return try JSONDecoder().decode(Report.self, from: Data(out.utf8)).sessions.first { $0.name == "stick" }
    }

    /// Polls status until `condition` holds for the stick's session.
    func waitForStatus(_ seconds: Double, _ condition: (Session) -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let s = try? status(), condition(s) { return true }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        return false
    }

    /// Kills apply and the testbed; removes the files.
    func stop() {
        if let apply, apply.isAlive {
            apply.signal(SIGKILL)
            _ = apply.process.waitUntilExitWithin(5)
        }
        testbed.stop()
        // The testbed ends with os._exit, skipping umockdev's own cleanup of its directory.
        try? FileManager.default.removeItem(atPath: testbed.root)
        try? FileManager.default.removeItem(at: dir)
    }
}

extension Process {
    /// Polls for exit (waitUntilExit can hang when called off the main thread).
    func waitUntilExitWithin(_ seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        return !isRunning
    }
}

extension String {
    /// The `commands` counters of a model's state JSON, as "op×n" pairs.
    var commandCounts: String {
        guard let object = try? JSONSerialization.jsonObject(with: Data(utf8)) as? [String: Any],
              let commands = object["commands"] as? [String: Int] else { return "?" }
        return commands.sorted { $0.key < $1.key }.map { "0x\($0.key)×\($0.value)" }.joined(separator: " ")
    }
}

/// The stick model answers what Linux's usb-storage and sd drivers may ask,
/// through libusb, as a device would: the chain tests above rely on it.
final class StickModelSCSITests: XCTestCase {
    func testAnswersOrFailsEachCommandWithProperSense() async throws {
        try await Umockdev.run(self) {
            let stick = try await openStick()
            let maxLUN = await stick.control(.init(requestType: 0xa1, request: 0xfe, value: 0, index: 0, length: 1), data: nil)
            XCTAssertEqual(bytes(maxLUN.data), [0], "Get Max LUN: one LUN")

            same(try await command(stick, [0x00, 0, 0, 0, 0, 0]).status, 0, "TEST UNIT READY")
            same(try await command(stick, [0x1e, 0, 0, 0, 1, 0]).status, 0, "PREVENT MEDIUM REMOVAL")
            same(try await command(stick, [0x1e, 0, 0, 0, 0, 0]).status, 0, "ALLOW MEDIUM REMOVAL")

            let pages = try await command(stick, [0x12, 1, 0x00, 0, 255, 0], dataIn: 255)
            XCTAssertEqual(pages.data, [0, 0, 0, 2, 0x00, 0x80], "EVPD: supported pages")
            let serial = try await command(stick, [0x12, 1, 0x80, 0, 255, 0], dataIn: 255)
            XCTAssertEqual(serial.data, [0, 0x80, 0, 9] + Array("STICK0001".utf8))
            // A page it lacks: CHECK CONDITION, the IN stage stalls, sense ILLEGAL REQUEST / INVALID FIELD IN CDB.
            let noPage = try await command(stick, [0x12, 1, 0x83, 0, 255, 0], dataIn: 255)
            XCTAssertEqual(noPage.status, 1)
            XCTAssertTrue(noPage.stalled)
            same(try await sense(stick), [0x05, 0x24, 0x00])
            same(try await sense(stick), [0, 0, 0], "REQUEST SENSE clears the sense")

            let rc16 = try await command(stick, [0x9e, 0x10] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 32, 0, 0], dataIn: 32)
            XCTAssertEqual(Array(rc16.data.prefix(12)), [0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00], "last LBA 2047, 512-byte blocks")
            let rc10 = try await command(stick, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], dataIn: 8)
            XCTAssertEqual(rc10.data, [0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00])

            let ms6 = try await command(stick, [0x1a, 0, 0x3f, 0, 192, 0], dataIn: 192)
            XCTAssertEqual(Array(ms6.data.prefix(4)), [23, 0, 0, 0], "MODE SENSE(6): caching page, not write-protected")
            let ms10 = try await command(stick, [0x5a, 0, 0x3f, 0, 0, 0, 0, 0, 192, 0], dataIn: 192)
            XCTAssertEqual(Array(ms10.data.prefix(4)), [0, 26, 0, 0], "MODE SENSE(10)")
            XCTAssertEqual(ms10.data.count, 28)
            let badPage = try await command(stick, [0x1a, 0, 0x2a, 0, 192, 0], dataIn: 192)
            XCTAssertEqual(badPage.status, 1)
            same(try await sense(stick), [0x05, 0x24, 0x00])

            // 120 KiB in one READ(10), as Linux asks; READ(16) too.
            let big = try await command(stick, [0x28, 0, 0, 0, 0, 16, 0, 0, 240, 0], dataIn: 240 * 512)
            XCTAssertEqual(big.status, 0)
            XCTAssertEqual(big.data, (16 * 512..<256 * 512).map(Umockdev.imageByte))
            let read16 = try await command(stick, [0x88, 0] + [0, 0, 0, 0, 0, 0, 0, 5] + [0, 0, 0, 1, 0, 0], dataIn: 512)
            XCTAssertEqual(read16.data, (5 * 512..<6 * 512).map(Umockdev.imageByte))
            // Past the end: LOGICAL BLOCK ADDRESS OUT OF RANGE.
            let past = try await command(stick, [0x28, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0], dataIn: 1024)
            XCTAssertEqual(past.status, 1)
            XCTAssertTrue(past.stalled)
            same(try await sense(stick), [0x05, 0x21, 0x00])
            // An opcode it does not know: INVALID COMMAND OPERATION CODE.
            same(try await command(stick, [0xd0, 0, 0, 0, 0, 0]).status, 1)
            same(try await sense(stick), [0x05, 0x20, 0x00])

            // Bulk-Only Mass Storage Reset in the middle of a command: the
            // pending data is dropped, the next command runs.
            let sent = await stick.transfer(endpoint: 0x02, length: 31, data: cbw(tag: 9, length: 512, isIn: true, [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), streamID: 0)
            XCTAssertEqual(sent.status, .success)
            let reset = await stick.control(.init(requestType: 0x21, request: 0xff, value: 0, index: 0, length: 0), data: nil)
            XCTAssertEqual(reset.status, .success)
            same(try await command(stick, [0x00, 0, 0, 0, 0, 0]).status, 0)
            await stick.close()
        }
    }

    /// XCTAssertEqual without autoclosures, so its arguments may await.
    func same<T: Equatable>(_ value: T, _ expected: T, _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(value, expected, message, file: file, line: line)
    }

    /// One command over BOT; a stalled IN stage is cleared (as usb-storage
    /// does) before the CSW is read.
    func command(_ device: LibUSBDevice, _ cb: [UInt8], dataIn: Int = 0) async throws -> (status: UInt8, data: [UInt8], stalled: Bool) {
        let sent = await device.transfer(endpoint: 0x02, length: 31, data: cbw(tag: 0x77, length: UInt32(dataIn), isIn: dataIn > 0, cb), streamID: 0)
        guard sent.status == .success else { throw TestbedError(message: "CBW: \(sent)") }
        var data: [UInt8] = []
        var stalled = false
        if dataIn > 0 {
            let r = await device.transfer(endpoint: 0x81, length: dataIn, data: nil, streamID: 0)
            if r.status == .stall {
                stalled = true
                same(await device.clearHalt(endpoint: 0x81), .success)
            } else {
                guard r.status == .success else { throw TestbedError(message: "data in: \(r.status)") }
                data = bytes(r.data)
            }
        }
        let csw = await device.transfer(endpoint: 0x81, length: 13, data: nil, streamID: 0)
        let c = bytes(csw.data)
        guard csw.status == .success, c.count == 13, c[0..<4] == [0x55, 0x53, 0x42, 0x53] else { throw TestbedError(message: "CSW: \(csw)") }
        let residue = Int(c[8]) | Int(c[9]) << 8 | Int(c[10]) << 16 | Int(c[11]) << 24
        XCTAssertEqual(residue, dataIn - data.count, "CSW residue of \(cb)")
        return (c[12], data, stalled)
    }

    /// REQUEST SENSE: key, ASC, ASCQ.
    func sense(_ device: LibUSBDevice) async throws -> [UInt8] {
        let r = try await command(device, [0x03, 0, 0, 0, 18, 0], dataIn: 18)
        guard r.status == 0, r.data.count == 18, r.data[0] == 0x70 else { throw TestbedError(message: "REQUEST SENSE: \(r)") }
        return [r.data[2], r.data[12], r.data[13]]
    }
}
