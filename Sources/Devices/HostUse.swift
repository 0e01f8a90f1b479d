#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Whether the machine itself uses a USB device, read from sysfs and /proc
/// without opening the device: a storage device with a mounted file system
/// or an active swap area on it. A broad rule (a vendor id, a class of
/// sticks) must not take such a device from under the host; an assignment
/// says `take-from-host: true` to take it anyway.
public struct HostUse: Sendable {
    public var sysfsDevices: String
    public var mounts: String
    public var swaps: String

    public init(sysfsDevices: String = "/sys/bus/usb/devices", mounts: String = "/proc/self/mounts",
                swaps: String = "/proc/swaps") {
        self.sysfsDevices = sysfsDevices
        self.mounts = mounts
        self.swaps = swaps
    }

    /// How deep below a device its block devices sit:
    /// `1-3:1.0/host2/target2:0:0/2:0:0:0/block/sdb/sdb1`.
    static let maxDepth = 8
    /// /proc/self/mounts of a busy host is long, but not this long.
    static let maxTableBytes = 4 * 1024 * 1024

    /// Why the host uses the device at `port` ("/dev/sdb1 mounted on /mnt"),
    /// or nil when it does not (or it has no block device at all).
    public func reason(port: String) -> String? {
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

    /// Present devices the host uses, by port path.
    public func reasons(for devices: [USBDeviceInfo]) -> [String: String] {
        var out: [String: String] = [:]
        for d in devices { if let why = reason(port: d.port) { out[d.port] = why } }
        return out
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
    static func subdirectories(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name != ".", name != "..", entry.pointee.d_type == UInt8(DT_DIR) else { continue }
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
