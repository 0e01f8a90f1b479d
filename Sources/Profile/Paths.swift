/// Lexical path handling: every relative path in a profile is resolved from
/// the profile file's folder (architecture.md), never from the working directory,
/// so `usbredir apply ../lab.yaml` and a systemd unit see the same files.
enum Paths {
    /// `path` made absolute against the current directory, `.`/`..` removed.
    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? normalize(path) : normalize(Platform.currentDirectory() + "/" + path)
    }

    /// `path` resolved against `directory` (itself absolute).
    static func resolve(_ path: String, from directory: String) -> String {
        path.hasPrefix("/") ? normalize(path) : normalize(directory + "/" + path)
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// Removes empty, `.` and `..` components without touching the file
    /// system (symlinks are left for the OS to follow when the file is opened).
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..": if !parts.isEmpty { parts.removeLast() }
            default: parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }
}
