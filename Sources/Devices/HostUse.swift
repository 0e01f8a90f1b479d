#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Whether the machine itself uses a USB device, read from sysfs and /proc
/// without opening the device: a storage device with a mounted file system
/// or an active swap area on it, or an input device or sound card whose node
/// a process holds open (HostUse+HeldNodes.swift). A broad rule (a vendor
/// id, a class of sticks) must not take such a device from under the host;
/// an assignment says `take-from-host: true` to take it anyway.
public struct HostUse: Sendable {
    public var sysfsDevices: String
    public var mounts: String
    public var swaps: String
    /// Where the processes are (`PID/fd/N`, `PID/comm`).
    public var proc: String
    /// Where device nodes are: `event5` in sysfs is `\(dev)/input/event5`.
    public var dev: String

    public init(sysfsDevices: String = "/sys/bus/usb/devices", mounts: String = "/proc/self/mounts",
                swaps: String = "/proc/swaps", proc: String = "/proc", dev: String = "/dev") {
        self.sysfsDevices = sysfsDevices
        self.mounts = mounts
        self.swaps = swaps
        self.proc = proc
        self.dev = dev
    }

    /// How deep below a device its block devices and nodes sit:
    /// `1-3:1.0/host2/target2:0:0/2:0:0:0/block/sdb/sdb1`,
    /// `1-1:1.0/0003:046D:C31C.0001/input/input5/event5`.
    static let maxDepth = 8
    /// /proc/self/mounts of a busy host is long, but not this long.
    static let maxTableBytes = 4 * 1024 * 1024

    /// Why the host uses the device at `port` ("/dev/sdb1 mounted on /mnt",
    /// "/dev/input/event5 held open by Xorg (pid 812)"), or nil when it does not.
    public func reason(port: String) -> String? { reasons(ports: [port])[port] }

    /// Present devices the host uses, by port path.
    public func reasons(for devices: [USBDeviceInfo]) -> [String: String] { reasons(ports: devices.map(\.port)) }

    /// Storage first: a mount is the stronger claim and costs no /proc scan.
    /// Then the held nodes of the rest, from one scan of /proc for all of
    /// them, and none when no device has such nodes.
    func reasons(ports: [String]) -> [String: String] {
        var out: [String: String] = [:]
        var nodes: [String: [String]] = [:]
        for port in ports {
            if let why = storageReason(port: port) {
                out[port] = why
                continue
            }
            let own = personNodes(port: port)
            if !own.isEmpty { nodes[port] = own }
        }
        let holders = holders(of: Set(nodes.values.joined()))
        for (port, own) in nodes {
            if let node = own.first(where: { holders[$0] != nil }), let who = holders[node] {
                out[port] = "\(node) held open by \(who)"
            }
        }
        return out
    }

    /// A mounted file system or swap area on the device's block devices.
    func storageReason(port: String) -> String? {
        let names = Set(blockDevices(under: "\(sysfsDevices)/\(port)", depth: 0))
        guard !names.isEmpty else { return nil }
        let owned = { (source: Substring) -> Bool in
            source.hasPrefix("/dev/") && names.contains(String(source.split(separator: "/").last ?? ""))
        }
        for line in table(mounts) {
            let f = line.split(separator: " ")
            if f.count >= 2, owned(f[0]) { return "\(f[0]) mounted on \(Self.unescape(f[1]))" }
        }
        for line in table(swaps).dropFirst() {
            if let source = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).first, owned(source) {
                return "\(source) in use as swap"
            }
        }
        return nil
    }

    /// Names of the block devices and partitions below a device's sysfs
    /// directory. Child USB devices of a hub (`1-3.2` below `1-3`) are theirs,
    /// not the hub's: the walk does not enter them; nor does it follow links.
    func blockDevices(under dir: String, depth: Int) -> [String] {
        guard depth <= Self.maxDepth else { return [] }
        var found: [String] = []
        for entry in Self.subdirectories(dir) where !Self.isUSBDevice(entry) {
            if entry == "block" {
                for disk in Self.subdirectories("\(dir)/block") {
                    found.append(disk)
                    found += Self.subdirectories("\(dir)/block/\(disk)").filter { $0.hasPrefix(disk) }
                }
            } else {
                found += blockDevices(under: "\(dir)/\(entry)", depth: depth + 1)
            }
        }
        return found
    }

    /// `1-3.2` (a device) rather than `1-3.2:1.0` (an interface) or `host2`.
    static func isUSBDevice(_ name: String) -> Bool {
        guard let dash = name.firstIndex(of: "-"), !name.contains(":") else { return false }
        return name[..<dash].allSatisfy(\.isNumber) && name[name.index(after: dash)...].allSatisfy { $0.isNumber || $0 == "." }
    }

    /// Real subdirectories (no symbolic links: sysfs links point across the tree).
    static func subdirectories(_ path: String) -> [String] { entries(path, type: DT_DIR) }

    /// The names in a directory of the given types (`DT_DIR`, `DT_LNK`), at
    /// most `limit` of them; none when it cannot be read.
    static func entries(_ path: String, type: Int..., limit: Int = .max) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while names.count < limit, let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name != ".", name != "..", type.contains(Int(entry.pointee.d_type)) else { continue }
            names.append(name)
        }
        return names
    }

    private func table(_ path: String) -> [Substring] {
        guard let text = readAttributeFile(path, limit: Self.maxTableBytes) else { return [] }
        return text.split(separator: "\n")
    }

    /// Mount points escape space, tab, newline and backslash as octal (`\040`).
    static func unescape(_ field: Substring) -> String {
        var out = ""
        var i = field.startIndex
        while i < field.endIndex {
            let end = field.index(i, offsetBy: 4, limitedBy: field.endIndex) ?? field.endIndex
            if field[i] == "\\", field.distance(from: i, to: end) == 4, let code = UInt8(field[field.index(after: i)..<end], radix: 8) {
                out.append(Character(Unicode.Scalar(code)))
                i = end
            } else {
                out.append(field[i])
                i = field.index(after: i)
            }
        }
        return out
    }
}
