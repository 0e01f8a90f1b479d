import CBuildStamp

/// The tool's version: `usbredir --version`, and the name it gives in its
/// usbredir hello.
public enum USBRedirVersion {
    public static let string = "0.1.0"
    /// What the host announces in its hello message.
    public static let hello = "usbredir-swift \(string)"

    /// The git commit the binary was built from, as `make release` and
    /// `make deb` stamp it (scripts/stamp-commit.py); nil for a plain
    /// `swift build`.
    public static var commit: String? {
        let stamped = String(cString: usbredir_build_commit())
        return stamped.isEmpty ? nil : stamped
    }

    /// `usbredir --version`: "0.1.0 (commit 0123456789ab)".
    public static var described: String {
        "\(string) (commit \(commit ?? "unknown: not stamped, see make release"))"
    }
}
