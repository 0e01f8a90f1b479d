import Foundation
import TestSupport
import XCTest

/// Runs a test against umockdev's emulated USB bus.
///
/// libusb must see the emulated bus from its first call, which needs
/// umockdev's LD_PRELOAD library in place when the process starts. So a
/// test run normally (`swift test`) is the *parent*: it starts
///   1. the testbed, `umockdev-wrapper python3 umockdev/testbed.py`, which
///      builds the devices and prints its UMOCKDEV_DIR, then serves
///      plug/unplug/state commands on a unix socket, and
///   2. this very test binary again, under `umockdev-wrapper`, filtered to
///      the one test, with UMOCKDEV_DIR, USBREDIR_UMOCKDEV_CHILD=1, the
///      control socket and the disk image path in its environment.
/// In the child the same test method runs its body for real; the parent
/// passes or fails with the child's exit status and shows its output.
enum Umockdev {
    static let childVariable = "USBREDIR_UMOCKDEV_CHILD"
    static let controlVariable = "USBREDIR_TESTBED_CONTROL"
    static let imageVariable = "USBREDIR_TESTBED_IMAGE"
    static let wrapper = "/usr/bin/umockdev-wrapper"
    static let python = "/usr/bin/python3"
    /// Bytes of the stick's image: 2048 blocks of 512.
    static let imageSize = 1024 * 1024
    static let childTimeout: TimeInterval = 30

    static var isChild: Bool { ProcessInfo.processInfo.environment[childVariable] == "1" }

    static var testbedScript: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("umockdev/testbed.py").path
    }

    /// Why the emulation cannot run here, or nil when it can.
    static let unavailableReason: String? = {
        guard FileManager.default.isExecutableFile(atPath: wrapper) else { return "umockdev-wrapper is not installed" }
        guard FileManager.default.isExecutableFile(atPath: python) else { return "\(python) is missing" }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: python)
        probe.arguments = ["-c", "import gi; gi.require_version('UMockdev', '1.0'); from gi.repository import UMockdev"]
        probe.standardError = FileHandle.nullDevice
        guard (try? probe.run()) != nil else { return "cannot run \(python)" }
        let deadline = Date().addingTimeInterval(30)
        while probe.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        if probe.isRunning {
            kill(probe.processIdentifier, SIGKILL)
            return "\(python) did not finish importing gi's UMockdev within 30 s"
        }
        return probe.terminationStatus == 0 ? nil : "python3 cannot import gi's UMockdev (gir1.2-umockdev-1.0, python3-gi)"
    }()

    /// The emulated bus, as a gate (see TestSupport's Requirement).
    static let requirement = Requirement("umockdev", missingReason: unavailableReason)

    /// The byte at offset `i` of the stick's image.
    static func imageByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 7 &+ i / 512) }

    /// In the child: runs `body`. In the parent: runs the child for this
    /// test next to a fresh testbed. `absent` devices are not plugged at start.
    static func run(_ test: XCTestCase, _ function: String = #function, absent: [String] = [],
                    _ body: () async throws -> Void) async throws {
        if isChild { return try await body() }
        // CI installs umockdev (scripts/install-deps.sh --all): the one gate fails there, skips elsewhere.
        try requirement.xctGate()
        let name = "LibUSBTests.\(type(of: test))/\(function.replacingOccurrences(of: "()", with: ""))"
        try runChild(testName: name, absent: absent)
    }

    private static func runChild(testName: String, absent: [String]) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("libusb-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let image = dir.appendingPathComponent("stick.img").path
        try Data((0..<imageSize).map(imageByte)).write(to: URL(fileURLWithPath: image))
        let control = dir.appendingPathComponent("control").path

        let testbed = try Testbed(script: testbedScript, image: image, control: control, absent: absent)
        defer { testbed.stop() }

        let child = Process()
        child.executableURL = URL(fileURLWithPath: wrapper)
        child.arguments = [CommandLine.arguments[0], testName]
        var env = ProcessInfo.processInfo.environment
        env["UMOCKDEV_DIR"] = testbed.root
        env[childVariable] = "1"
        env[controlVariable] = control
        env[imageVariable] = image
        child.environment = env
        let output = CollectedOutput()
        let pipe = Pipe()
        child.standardOutput = pipe
        child.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { output.append($0.availableData) }
        try child.run()
        let deadline = Date().addingTimeInterval(childTimeout)
        while child.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        if child.isRunning {
            // SIGKILL: a test process stuck in an await did not always end on SIGTERM.
            kill(child.processIdentifier, SIGKILL)
            let reaped = Date().addingTimeInterval(5)
            while child.isRunning && Date() < reaped { Thread.sleep(forTimeInterval: 0.01) }
            XCTFail("\(testName) under umockdev did not finish in \(Int(childTimeout)) s:\n\(output.text)\n\(testbed.log)")
            return
        }
        pipe.fileHandleForReading.readabilityHandler = nil
        output.append(pipe.fileHandleForReading.readDataToEndOfFile())
        let text = output.text
        if child.terminationStatus != 0 || !text.contains("Executed 1 test") {
            XCTFail("\(testName) under umockdev failed (status \(child.terminationStatus)):\n\(text)\ntestbed:\n\(testbed.log)")
        }
    }
}

/// The Python testbed process.
final class Testbed {
    let process = Process()
    let root: String
    private let stdin = Pipe()
    private let output = CollectedOutput()

    init(script: String, image: String, control: String, absent: [String]) throws {
        process.executableURL = URL(fileURLWithPath: Umockdev.wrapper)
        process.arguments = [Umockdev.python, script, "--image", image, "--control", control]
            + absent.flatMap { ["--absent", $0] }
        process.standardInput = stdin         // the testbed exits when this closes
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { [output] in output.append($0.availableData) }
        try process.run()
        let deadline = Date().addingTimeInterval(15)
        while !output.text.contains("READY\n") {
            guard process.isRunning, Date() < deadline else {
                stdin.fileHandleForWriting.closeFile()
                throw TestbedError(message: "testbed did not start:\n\(output.text)")
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        guard let line = output.text.split(separator: "\n").first(where: { $0.hasPrefix("ROOT ") }) else {
            throw TestbedError(message: "testbed printed no ROOT line:\n\(output.text)")
        }
        root = String(line.dropFirst(5))
    }

    var log: String { output.text }

    func stop() {
        stdin.fileHandleForWriting.closeFile()
        let deadline = Date().addingTimeInterval(3)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            let reaped = Date().addingTimeInterval(5)
            while process.isRunning && Date() < reaped { Thread.sleep(forTimeInterval: 0.01) }
        }
    }
}

struct TestbedError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

final class CollectedOutput: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()

    func append(_ d: Data) { lock.lock(); data.append(d); lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }
}
