import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The lab host (docs/labhost.md): a VM playing a real lab machine, built
/// by scripts/build-labhost.sh around a usbredir binary, with QEMU's
/// emulated USB devices on its qemu-xhci and Gadget Zero inside, driven
/// through its control port (scripts/guest/ctl). Its QEMU also gives it
/// user networking: the outer host's 127.0.0.1 is 10.0.2.2 in there.
public final class LabHost: @unchecked Sendable {
    /// An emulated device on the lab host's USB: `qemu` is the -device
    /// option (bus and port included, so the port path is fixed), `drive`
    /// the -drive it needs, if any.
    public struct Device: Sendable {
        public var qemu: String
        public var drive: String?
        public var chardev: String?
        /// The -audiodev it plays into, if any.
        public var audiodev: String?
        /// -device options that go after this one (devices on its bus).
        public var children: [String] = []
        public init(_ qemu: String, drive: String? = nil, chardev: String? = nil, audiodev: String? = nil, children: [String] = []) {
            self.qemu = qemu; self.drive = drive; self.chardev = chardev; self.audiodev = audiodev; self.children = children
        }

        /// QEMU's usb-audio (full speed, isochronous OUT, 48 kHz S16LE
        /// stereo) playing into a wav file on this machine. The backend
        /// runs at 48 kHz too (`out.frequency`: QEMU's default, 44.1 kHz,
        /// would resample), so the file holds the samples as the device
        /// got them, once its volume is at 255 of 255 (it starts at 240).
        /// QEMU writes the file through stdio and its header on close.
        public static func audio(id: String, wav: String, port: String) -> Device {
            Device("usb-audio,bus=usb.0,port=\(port),audiodev=\(id),id=\(id)dev",
                   audiodev: "wav,id=\(id),path=\(wav),out.frequency=48000,out.channels=2,out.format=s16")
        }

        /// QEMU's usb-uas (USB Attached SCSI, SuperSpeed, bulk streams) with
        /// one scsi-hd on a raw `image`.
        public static func uasStick(id: String, image: String, port: String) -> Device {
            Device("usb-uas,bus=usb.0,port=\(port),id=\(id)", drive: "if=none,id=\(id)disk,format=raw,file=\(image)",
                   children: ["scsi-hd,bus=\(id).0,scsi-id=0,lun=0,drive=\(id)disk"])
        }

        /// QEMU's usb-serial (an FTDI FT232) whose other end is a unix
        /// socket QEMU listens on at `socket`. QEMU attaches the device only
        /// while that chardev is open: connect before the lab host boots.
        public static func serial(id: String, socket: String, port: String) -> Device {
            Device("usb-serial,bus=usb.0,port=\(port),chardev=\(id),id=\(id)dev",
                   chardev: "socket,id=\(id),path=\(socket),server=on,wait=off")
        }

        /// QEMU's usb-storage on a raw `image`, with a serial number.
        /// `port`: QEMU's port on the xHCI ("2", or "1.1" behind a hub on port 1).
        public static func stick(id: String, image: String, serial: String, port: String) -> Device {
            Device("usb-storage,bus=usb.0,port=\(port),drive=\(id),serial=\(serial),id=\(id)dev",
                   drive: "if=none,id=\(id),format=raw,file=\(image)")
        }
    }

    public static var outputDirectory: URL { Guest.repositoryRoot.appendingPathComponent("out/labhost") }

    /// Builds (or finds up to date) the lab host around `binary`; the seconds it took.
    @discardableResult
    public static func build(binary: String) throws -> Double {
        let start = Date()
        try runCommand("/bin/bash", [Guest.repositoryRoot.appendingPathComponent("scripts/build-labhost.sh").path,
                                     binary, outputDirectory.path])
        return Date().timeIntervalSince(start)
    }

    public let vm: QEMUVM
    public let ctl: ControlPort
    private let dir: URL

    /// Boots the lab host (built already) with `devices`; returns once QEMU
    /// runs (`waitUntilReady` waits for its control port).
    public init(devices: [Device], memoryMiB: Int = 1024) throws {
        dir = try makeTemporaryDirectory("usbredir-labhost")
        let socket = dir.appendingPathComponent("ctl.sock").path
        var o = QEMUVM.Options()
        o.kernel = Self.outputDirectory.appendingPathComponent("vmlinux").path
        o.initrd = Self.outputDirectory.appendingPathComponent("initrd.gz").path
        o.append = "console=ttyS0 panic=-1 quiet"
        o.memoryMiB = memoryMiB
        var extra: [String] = []
        for d in devices {
            if let drive = d.drive { extra += ["-drive", drive] }
            if let chardev = d.chardev { extra += ["-chardev", chardev] }
            if let audiodev = d.audiodev { extra += ["-audiodev", audiodev] }
            extra += ["-device", d.qemu]
            for c in d.children { extra += ["-device", c] }
        }
        extra += ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"]
        extra += ControlPort.qemuArguments(socket: socket)
        o.extraArgs = extra
        vm = try QEMUVM(o)
        ctl = ControlPort(socketPath: socket)
    }

    /// Waits for "LABHOST ready" and a ctl answer; the seconds since boot.
    @discardableResult
    public func waitUntilReady(timeout: Double = 120) throws -> Double {
        try ctl.waitUntilServing(timeout: timeout)
    }

    /// The LABHOST lines of the console.
    public var consoleLines: [String] {
        vm.serial.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("LABHOST ") }.map(String.init)
    }

    public func stop() {
        vm.stop()
        try? FileManager.default.removeItem(at: dir)
    }
}

extension ControlPort {
    /// QEMU options for a virtio-serial port named "labctl" (what
    /// scripts/guest/ctl serves) on a unix socket QEMU listens on.
    public static func qemuArguments(socket: String, name: String = "labctl") -> [String] {
        ["-device", "virtio-serial-pci,id=ctlbus",
         "-chardev", "socket,id=ctlchr,path=\(socket),server=on,wait=off",
         "-device", "virtserialport,bus=ctlbus.0,chardev=ctlchr,name=\(name)"]
    }
}

/// The lab-host target: the test guest in `usbtest=ctl` mode (it loads
/// usbtest, usbhid, ... and serves commands) with usb-redir devices whose
/// chardevs listen on 127.0.0.1 of the outer host, reached from the lab
/// host at 10.0.2.2:PORT.
public final class LabTarget: @unchecked Sendable {
    public let vm: QEMUVM
    public let ctl: ControlPort
    /// One listening usb-redir device per port, in order.
    public let redirPorts: [Int]
    private let dir: URL

    public init(redirPorts: [Int], controller: String = "qemu-xhci") throws {
        dir = try makeTemporaryDirectory("usbredir-labtarget")
        let socket = dir.appendingPathComponent("ctl.sock").path
        var o = try Guest.options(append: "usbtest=ctl")
        o.controller = controller
        var extra: [String] = []
        for (i, p) in redirPorts.enumerated() {
            extra += ["-chardev", "socket,id=labredir\(i),host=127.0.0.1,port=\(p),server=on,wait=off",
                      "-device", "usb-redir,chardev=labredir\(i),id=labredirdev\(i),bus=usb.0"]
        }
        extra += ControlPort.qemuArguments(socket: socket)
        o.extraArgs = extra
        self.redirPorts = redirPorts
        vm = try QEMUVM(o)
        ctl = ControlPort(socketPath: socket)
    }

    public func stop() {
        vm.stop()
        try? FileManager.default.removeItem(at: dir)
    }
}

/// A byte stream to a unix socket QEMU listens on (a chardev: the far end
/// of an emulated serial port, say), with reads that give up after a deadline.
public final class UnixStream: @unchecked Sendable {
    public let fd: Int32

    /// Connects, retrying until `timeout` (QEMU creates the socket as it starts).
    public init(path: String, timeout: Double = 10) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            do { fd = try QMP.connect(path); return } catch {
                if Date() >= deadline { throw error }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
    }
    deinit { close(fd) }

    public func send(_ bytes: [UInt8]) throws {
        guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw ControlPort.Failure(description: "write to the socket: errno \(errno)")
        }
    }

    /// Reads until `count` bytes arrived or `timeout` passed; what arrived.
    public func receive(count: Int, timeout: Double) -> [UInt8] {
        var got: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        while got.count < count {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { break }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&p, 1, Int32(min(left, 1) * 1000)) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { break }
            got += chunk[..<n]
        }
        return got
    }
}
