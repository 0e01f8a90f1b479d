#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Where running applies listen for `status`: $XDG_RUNTIME_DIR when set,
/// else /run/usbredir (architecture.md).
public enum StatusSocket {
    public static var directory: String {
        if let dir = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], !dir.isEmpty { return dir }
        return "/run/usbredir"
    }

    public static func path(forProfile name: String) -> String { "\(directory)/usbredir-\(name).sock" }

    /// The folder part of a socket path ("sub" of "sub/s.sock", "." of
    /// "s.sock", "/" of "/s.sock"), as NSString's deletingLastPathComponent.
    static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let folder = String(path[..<slash])
        return folder.isEmpty ? "/" : folder
    }

    /// Every status socket in the directory.
    public static func all() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix("usbredir-") && $0.hasSuffix(".sock") }.sorted().map { "\(directory)/\($0)" }
    }

    /// Largest request line we read; the protocol has one word.
    static let maxRequest = 64
    /// How long a client may take to send its request line.
    static let idleTimeout = TimeAmount.seconds(5)
    /// Largest answer a client accepts.
    static let maxReply = 16 * 1024 * 1024
}
