import Foundation

/// A libvirtd (with its virtlogd) that a test starts as its own children
/// and stops by pid, so CI needs no service manager. The machine setup the
/// QEMU driver insists on (field-notes.md) is made first, idempotently:
/// the user libvirt-qemu and the group kvm, qemu.conf running QEMU as root
/// without relabelling, and the run and log folders.
public final class Libvirtd: @unchecked Sendable {
    public static let uri = "qemu:///system"
    public static let daemon = "/usr/sbin/libvirtd"
    public static let logDaemon = "/usr/sbin/virtlogd"
    public static let virsh = "/usr/bin/virsh"

    private let virtlogd: BackgroundProcess
    private let libvirtd: BackgroundProcess
    private var domains: [String] = []
    public let directory: URL

    public init() throws {
        try Self.prepareMachine()
        directory = try makeTemporaryDirectory("usbredir-libvirtd")
        virtlogd = try BackgroundProcess(Self.logDaemon, [], logFile: directory.appendingPathComponent("virtlogd.log"))
        libvirtd = try BackgroundProcess(Self.daemon, [], logFile: directory.appendingPathComponent("libvirtd.log"))
        let deadline = Date().addingTimeInterval(30)
        while (try? runCommand(Self.virsh, ["-c", Self.uri, "version"], timeout: 10)) == nil {
            guard libvirtd.isAlive, Date() < deadline else {
                stop()
                throw LibvirtdError(message: "libvirtd did not come up (another libvirtd running?):\n\(libvirtd.log.suffix(3000))")
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    deinit { stop() }

    /// Destroys the domains this test created, then ends both daemons
    /// (SIGKILL: a child started from a concurrency thread may block SIGTERM).
    public func stop() {
        for name in domains { _ = try? virsh(["destroy", name]) }
        domains = []
        for daemon in [libvirtd, virtlogd] where daemon.isAlive {
            daemon.signal(SIGKILL)
            let deadline = Date().addingTimeInterval(5)
            while daemon.isAlive && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        }
    }

    @discardableResult
    public func virsh(_ arguments: [String]) throws -> String {
        try runCommand(Self.virsh, ["-c", Self.uri] + arguments, timeout: 60)
    }

    /// `virsh create`: a transient domain, destroyed by `stop()`.
    public func create(_ domain: TestDomain) throws {
        let file = directory.appendingPathComponent("\(domain.name).xml")
        try domain.xml.write(to: file, atomically: true, encoding: .utf8)
        try virsh(["create", file.path])
        if !domains.contains(domain.name) { domains.append(domain.name) }
    }

    public func destroy(_ name: String) throws { try virsh(["destroy", name]) }

    static func prepareMachine() throws {
        if (try? runCommand("/usr/bin/getent", ["group", "kvm"])) == nil { try runCommand("/usr/sbin/groupadd", ["-r", "kvm"]) }
        if (try? runCommand("/usr/bin/getent", ["group", "libvirt-qemu"])) == nil {
            try runCommand("/usr/sbin/groupadd", ["-r", "libvirt-qemu"])
        }
        if (try? runCommand("/usr/bin/getent", ["passwd", "libvirt-qemu"])) == nil {
            try runCommand("/usr/sbin/useradd", ["-r", "-g", "libvirt-qemu", "libvirt-qemu"])
        }
        let conf = "/etc/libvirt/qemu.conf"
        var text = (try? String(contentsOfFile: conf, encoding: .utf8)) ?? ""
        for line in ["user = \"root\"", "group = \"root\"", "dynamic_ownership = 0", "security_driver = \"none\""]
        where !text.split(separator: "\n").contains(Substring(line)) {
            text += (text.isEmpty || text.hasSuffix("\n") ? "" : "\n") + line + "\n"
        }
        try text.write(toFile: conf, atomically: true, encoding: .utf8)
        for dir in ["/var/log/libvirt", "/var/run/libvirt"] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
    }
}

public struct LibvirtdError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// A transient TCG domain booting the test guest: qemu-xhci, SPICE with a
/// password (autoport on 127.0.0.1, or a unix socket), spicevmc redirdevs,
/// serial console to a file.
public struct TestDomain: Sendable {
    public var name: String
    public var append: String
    public var password = "libvirt-s3cret"
    /// SPICE on this unix socket instead of an autoport on 127.0.0.1.
    public var spiceSocket: String?
    public var redirdevs = 2
    public let serialLog: String

    public init(name: String, append: String, in dir: URL) {
        self.name = name
        self.append = append
        serialLog = dir.appendingPathComponent("\(name)-serial.log").path
    }

    public var serial: String { (try? String(contentsOfFile: serialLog, encoding: .utf8)) ?? "" }

    public var xml: String {
        let guest = Guest.directory
        let listen = spiceSocket.map { "<listen type='socket' socket='\($0)'/>" }
            ?? "<listen type='address' address='127.0.0.1'/>"
        let autoport = spiceSocket == nil ? " autoport='yes'" : ""
        let redirdevs = String(repeating: "<redirdev bus='usb' type='spicevmc'/>\n", count: redirdevs)
        return """
            <domain type='qemu'>
              <name>\(name)</name>
              <memory unit='MiB'>256</memory>
              <vcpu>1</vcpu>
              <os>
                <type arch='x86_64' machine='pc'>hvm</type>
                <kernel>\(guest.appendingPathComponent("vmlinux").path)</kernel>
                <initrd>\(guest.appendingPathComponent("initrd.gz").path)</initrd>
                <cmdline>console=ttyS0 panic=-1 quiet \(append)</cmdline>
              </os>
              <on_reboot>destroy</on_reboot>
              <devices>
                <emulator>\(QEMUVM.executable)</emulator>
                <controller type='usb' model='qemu-xhci'/>
                <graphics type='spice'\(autoport) passwd='\(password)'>\(listen)</graphics>
                \(redirdevs)
                <video><model type='none'/></video>
                <serial type='file'><source path='\(serialLog)'/><target port='0'/></serial>
                <memballoon model='none'/>
              </devices>
            </domain>
            """
    }
}

extension Requirement {
    /// libvirtd, virtlogd and virsh (scripts/install-deps.sh --all), and root.
    public static let libvirt = Requirement("libvirt") {
        if getuid() != 0 { return "libvirt tests run libvirtd as root; uid is \(getuid())" }
        let missing = [Libvirtd.daemon, Libvirtd.logDaemon, Libvirtd.virsh].filter {
            !FileManager.default.isExecutableFile(atPath: $0)
        }
        return missing.isEmpty ? nil : "\(missing.joined(separator: ", ")) not installed"
    }
}
