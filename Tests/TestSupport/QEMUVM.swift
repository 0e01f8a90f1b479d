import Foundation

/// A QEMU started for one test: headless, TCG (the machine's /dev/kvm hangs
/// stock kernels), killed when the test ends. Without a kernel it sits in
/// the firmware, which is all a transport test needs: SPICE and usb-redir
/// work without a guest.
public final class QEMUVM: @unchecked Sendable {
    public struct Options: Sendable {
        public var controller: String = "qemu-xhci"     // or "usb-ehci"
        public var spicePort: Int?
        public var spicePassword: String?
        public var spiceTLSPort: Int?
        /// SPICE on a unix domain socket at this path (`-spice unix=on,addr=PATH`),
        /// instead of TCP.
        public var spiceUnixSocket: String?
        public var x509Dir: String?
        public var usbredirChannels = 0
        /// QEMU listens for a raw usbredir peer on this port.
        public var redirListenPort: Int?
        /// QEMU connects to a raw usbredir peer on this port.
        public var redirConnectPort: Int?
        /// usbredir filter for every usb-redir device (`filter=` option).
        public var redirFilter: String?
        public var redirDebug: Int?
        public var kernel: String?
        public var initrd: String?
        public var append: String?
        public var nativeImage: String?
        public var memoryMiB = 256
        public var extraArgs: [String] = []
        public init() {}
    }

    public let options: Options
    public let process = Process()
    public let logFile: URL
    public let serialLog: URL
    public let qmpSocket: String

    /// The emulator. Tests gate on it through `Requirement.qemu` (`.requires(.qemu)`),
    /// which fails instead of skipping when CI is set.
    public static let executable = "/usr/bin/qemu-system-x86_64"

    public init(_ options: Options) throws {
        self.options = options
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("usbredir-qemu-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        logFile = dir.appendingPathComponent("qemu.log")
        serialLog = dir.appendingPathComponent("serial.log")
        qmpSocket = dir.appendingPathComponent("qmp.sock").path
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: Self.executable)
        process.arguments = arguments()
        let log = try FileHandle(forWritingTo: logFile)
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try waitUntilReady()
    }

    deinit { stop() }

    func arguments() -> [String] {
        var a = ["-accel", "tcg", "-display", "none", "-nodefaults", "-m", "\(options.memoryMiB)",
                 "-no-reboot", "-serial", "file:\(serialLog.path)",
                 "-qmp", "unix:\(qmpSocket),server=on,wait=off",
                 "-device", "\(options.controller),id=usb"]
        var spice: [String] = options.spiceUnixSocket.map { ["unix=on", "addr=\($0)"] } ?? ["addr=127.0.0.1"]
        if let p = options.spicePort { spice.append("port=\(p)") }
        if let p = options.spiceTLSPort, let dir = options.x509Dir { spice += ["tls-port=\(p)", "x509-dir=\(dir)"] }
        if let pw = options.spicePassword { spice.append("password=\(pw)") } else { spice.append("disable-ticketing=on") }
        if options.spicePort != nil || options.spiceTLSPort != nil || options.spiceUnixSocket != nil {
            a += ["-spice", spice.joined(separator: ",")]
        }
        for i in 0..<options.usbredirChannels {
            a += ["-chardev", "spicevmc,name=usbredir,id=usbredirchardev\(i)", "-device", redirDevice("usbredirchardev\(i)", i)]
        }
        if let p = options.redirListenPort {
            a += ["-chardev", "socket,id=rawlisten,host=127.0.0.1,port=\(p),server=on,wait=off",
                  "-device", redirDevice("rawlisten", 10)]
        }
        if let p = options.redirConnectPort {
            a += ["-chardev", "socket,id=rawconnect,host=127.0.0.1,port=\(p),server=off,reconnect=1",
                  "-device", redirDevice("rawconnect", 11)]
        }
        if let img = options.nativeImage {
            a += ["-drive", "if=none,id=nativedisk,format=raw,file=\(img)", "-device", "usb-storage,bus=usb.0,drive=nativedisk"]
        }
        if let k = options.kernel { a += ["-kernel", k] }
        if let i = options.initrd { a += ["-initrd", i] }
        if let ap = options.append { a += ["-append", ap] }
        return a + options.extraArgs
    }

    private func redirDevice(_ chardev: String, _ n: Int) -> String {
        var d = "usb-redir,chardev=\(chardev),id=redir\(n),bus=usb.0"
        // QEMU's option syntax doubles a comma inside a value.
        if let f = options.redirFilter { d += ",filter=" + f.replacingOccurrences(of: ",", with: ",,") }
        if let dbg = options.redirDebug { d += ",debug=\(dbg)" }
        return d
    }

    /// Ready when its listening ports accept (or its QMP socket exists).
    private func waitUntilReady(timeout: TimeInterval = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        let ports = [options.spicePort, options.spiceTLSPort, options.redirListenPort].compactMap { $0 }
        while Date() < deadline {
            guard isAlive else { throw QEMUError.exited(log) }
            let socket = options.spiceUnixSocket ?? qmpSocket
            let ready = ports.isEmpty ? FileManager.default.fileExists(atPath: socket) : ports.allSatisfy(isListening)
            if ready { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw QEMUError.notReady(log)
    }

    public var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }
    public var serial: String { (try? String(contentsOf: serialLog, encoding: .utf8)) ?? "" }

    /// Kills QEMU at once (SIGKILL), as a crash would.
    public func kill() {
        guard isAlive else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        _ = waitForExit(timeout: 5)
    }

    /// Ends QEMU. SIGKILL at once: a child started from a concurrency thread
    /// inherits a signal mask that blocks SIGTERM, and tests keep no state
    /// in QEMU worth a clean shutdown.
    public func stop() {
        kill()
    }

    /// Waits for QEMU to exit by itself (the guest powered off).
    public func waitForExit(timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while isAlive && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        return !isAlive
    }

    /// Alive unless gone or a zombie: Foundation's own reaping of children is
    /// not reliable from concurrency threads, so ask /proc.
    public var isAlive: Bool { processIsAlive(process.processIdentifier) }
}

public enum QEMUError: Error, CustomStringConvertible {
    case exited(String)
    case notReady(String)
    public var description: String {
        switch self {
        case .exited(let log): "QEMU exited early:\n\(log.suffix(3000))"
        case .notReady(let log): "QEMU did not come up:\n\(log.suffix(3000))"
        }
    }
}

extension QEMUVM {
    /// Waits without blocking a concurrency thread.
    public func exited(within seconds: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while isAlive && Date() < deadline { try? await Task.sleep(nanoseconds: 50_000_000) }
        return !isAlive
    }

    /// Waits until the guest's serial output contains `text`.
    public func serialContains(_ text: String, within seconds: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if serial.contains(text) { return true }
            if !isAlive { return serial.contains(text) }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        return false
    }
}
