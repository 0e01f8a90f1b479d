import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif

/// sd_notify(3) without libsystemd: one datagram per message on the unix
/// socket named by NOTIFY_SOCKET (a path, or an abstract name when it
/// starts with '@'). Without NOTIFY_SOCKET every call does nothing, so
/// apply outside systemd (or with Type=simple) is unchanged.
public final class ServiceNotifier: @unchecked Sendable {
    private let address: String?
    private let lock = NIOLock()
    private var lastStatus: String?

    /// `environment`: where NOTIFY_SOCKET is read (the process's by default).
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let value = environment["NOTIFY_SOCKET"] ?? ""
        address = value.isEmpty ? nil : value
    }

    public var isEnabled: Bool { address != nil }

    /// READY=1: the first reconcile pass is done.
    public func ready(status: String) { _ = send("READY=1\nSTATUS=\(status)") ; remember(status) }

    /// STATUS=...: sent only when the text changed since the last one, so
    /// callers may report on every pass and poll.
    public func status(_ text: String) {
        let changed: Bool = lock.withLock {
            guard lastStatus != text else { return false }
            lastStatus = text
            return true
        }
        if changed { _ = send("STATUS=\(text)") }
    }

    /// STOPPING=1: sessions are being disconnected.
    public func stopping() { _ = send("STOPPING=1") }

    private func remember(_ status: String) { lock.withLock { lastStatus = status } }

    /// The one line systemctl status shows: "2 sessions connected, 1 waiting".
    public static func summary(_ sessions: [AssignmentStatus]) -> String { summary(sessions.map(\.state)) }

    public static func summary(_ states: [AssignmentState]) -> String {
        let connected = states.filter { $0 == .connected }.count
        let waiting = states.count - connected
        return "\(connected) session\(connected == 1 ? "" : "s") connected, \(waiting) waiting"
    }

    /// Sends one datagram; false when there is no socket or it failed (a
    /// lost notification is not an error for apply).
    @discardableResult
    public func send(_ message: String) -> Bool {
        guard let address else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var path = Array(address.utf8)
        let abstract = path.first == UInt8(ascii: "@")
        if abstract { path[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard path.count < capacity || (abstract && path.count <= capacity) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: path)
        }
        // An abstract name's length counts exactly its bytes (no trailing NUL).
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (abstract ? 0 : 1))
        let bytes = Array(message.utf8)
        let sent = withUnsafePointer(to: &addr) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
            }
        }
        return sent == bytes.count
    }
}
