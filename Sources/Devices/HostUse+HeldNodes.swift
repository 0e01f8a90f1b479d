#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Input devices and sound cards the host uses. A keyboard, mouse, game
/// controller, security key or sound card is the host's while a process
/// there holds one of its nodes open (the X server, a compositor, a sound
/// server): taking it would take it from under someone. One that is merely
/// plugged in, a keyboard on a headless lab host, is nobody's; so the nodes
/// count only when held, not for being there.
extension HostUse {
    /// A busy desktop runs some hundreds of processes; the caps keep a
    /// reconcile pass from stalling on a /proc that is far larger.
    static let maxProcesses = 8192
    /// An X server or compositor holds some hundreds of fds, its input
    /// devices among the first.
    static let maxFDsPerProcess = 4096

    /// The nodes of a device's interfaces that a person would be using,
    /// sorted: `1-1:1.0/0003:046D:C31C.0001/input/input5/event5` is
    /// `/dev/input/event5`, `1-4:1.0/sound/card1/pcmC1D0p` is
    /// `/dev/snd/pcmC1D0p`. The walk is blockDevices': not into child USB
    /// devices of a hub, not along links, no deeper than `maxDepth`.
    public func personNodes(port: String) -> [String] {
        nodeNames(under: "\(sysfsDevices)/\(port)", depth: 0).compactMap(node(named:)).sorted()
    }

    func nodeNames(under dir: String, depth: Int) -> [String] {
        guard depth <= Self.maxDepth else { return [] }
        var found: [String] = []
        for entry in Self.subdirectories(dir) where !Self.isUSBDevice(entry) {
            if node(named: entry) != nil {
                found.append(entry)
            } else {
                found += nodeNames(under: "\(dir)/\(entry)", depth: depth + 1)
            }
        }
        return found
    }

    /// Where udev puts the node a sysfs directory stands for, by the shape
    /// of its name (`pcmC1D0p` is `pcmC#D#p`); nil for anything else: the
    /// kernel's `input5`, `card1`, LED and timer directories have no node a
    /// person uses.
    func node(named name: String) -> String? {
        var shape = ""
        for c in name where !(c.isASCII && c.isNumber && shape.last == "#") {
            shape.append(c.isASCII && c.isNumber ? "#" : c)
        }
        switch shape {
        case "event#", "mouse#", "js#": return "\(dev)/input/\(name)"
        case "hidraw#": return "\(dev)/\(name)"
        case "controlC#", "pcmC#D#p", "pcmC#D#c", "midiC#D#": return "\(dev)/snd/\(name)"
        default: return nil
        }
    }

    /// Who holds each of `nodes` open, "Xorg (pid 812)": the first process
    /// found with a `/proc/PID/fd/N` link to it. One pass over /proc for all
    /// of them, none when there are none. Processes and fds this one may not
    /// read (another user's, as non-root) are passed by: only a root usbredir
    /// sees them all. Links are read, never followed.
    func holders(of nodes: Set<String>) -> [String: String] {
        guard !nodes.isEmpty else { return [:] }
        var out: [String: String] = [:]
        for pid in Self.entries(proc, type: DT_DIR, limit: Self.maxProcesses) where pid.allSatisfy(\.isNumber) {
            for fd in Self.entries("\(proc)/\(pid)/fd", type: DT_LNK, limit: Self.maxFDsPerProcess) {
                guard let target = Self.link("\(proc)/\(pid)/fd/\(fd)"), nodes.contains(target), out[target] == nil
                else { continue }
                let comm = readAttributeFile("\(proc)/\(pid)/comm", limit: 64)
                out[target] = comm.map { "\($0) (pid \(pid))" } ?? "pid \(pid)"
            }
            if out.count == nodes.count { break }
        }
        return out
    }

    /// Where a symbolic link points, without following it.
    static func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        let n = readlink(path, &buffer, buffer.count)
        guard n > 0, n < buffer.count else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
