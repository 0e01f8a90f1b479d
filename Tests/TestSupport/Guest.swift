import Foundation

/// The test guest: Debian's kernel and a busybox initramfs whose /init runs
/// the test chosen on the kernel command line (scripts/guest/init documents
/// the modes and result lines). Built once per test run, then cached.
public enum Guest {
    public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static var directory: URL { repositoryRoot.appendingPathComponent("out/guest") }

    private static let built: Result<Void, Error> = Result {
        try runCommand("/bin/bash", [repositoryRoot.appendingPathComponent("scripts/build-guest.sh").path,
                                     directory.path])
    }

    /// Builds the guest unless it is there already (the script caches).
    public static func ensureBuilt() throws {
        try built.get()
    }

    /// QEMU options that boot the guest with `append` (e.g. "usbtest=read usbtest.mib=64").
    public static func options(append: String) throws -> QEMUVM.Options {
        try ensureBuilt()
        var o = QEMUVM.Options()
        o.kernel = directory.appendingPathComponent("vmlinux").path
        o.initrd = directory.appendingPathComponent("initrd.gz").path
        o.append = "console=ttyS0 panic=-1 quiet " + append
        return o
    }
}

/// The `USBTEST ...` lines a guest printed on its serial console.
public struct GuestReport: CustomStringConvertible {
    public let lines: [String]

    public init(serial: String) {
        lines = serial.split(whereSeparator: \.isNewline).compactMap { line in
            guard let r = line.range(of: "USBTEST ") else { return nil }
            return String(line[r.upperBound...]).trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    /// The first line starting with `prefix`.
    public func line(_ prefix: String) -> String? { lines.first { $0.hasPrefix(prefix) } }
    public func has(_ prefix: String) -> Bool { line(prefix) != nil }

    /// `key=value` from the first line that has that key.
    public func value(_ key: String) -> String? {
        for l in lines {
            for field in l.split(separator: " ") where field.hasPrefix(key + "=") {
                return String(field.dropFirst(key.count + 1))
            }
        }
        return nil
    }

    public var description: String { lines.joined(separator: "\n") }
}

/// sha256 of a file's first `bytes` bytes (all of it when nil), via sha256sum.
public func sha256(ofFile path: String, bytes: Int? = nil) throws -> String {
    let command = bytes.map { "head -c \($0) '\(path)' | sha256sum" } ?? "sha256sum '\(path)'"
    let out = try runCommand("/bin/sh", ["-c", command])
    return String(out.prefix(64))
}

/// A file of `mib` MiB of random bytes.
public func makeRandomImage(mib: Int, in dir: URL, name: String = "stick.img") throws -> String {
    let path = dir.appendingPathComponent(name).path
    try runCommand("/bin/dd", ["if=/dev/urandom", "of=\(path)", "bs=1M", "count=\(mib)", "status=none"])
    return path
}

/// sha256 of the guest's write pattern, regenerated on the host.
public func guestPatternSHA256(seed: String, mib: Int) throws -> String {
    let awk = Guest.repositoryRoot.appendingPathComponent("scripts/guest/pattern.awk").path
    let out = try runCommand("/bin/sh", ["-c", "awk -v seed='\(seed)' -v mib=\(mib) -f '\(awk)' | sha256sum"])
    return String(out.prefix(64))
}
