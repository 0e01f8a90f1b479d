#if canImport(Glibc)
import Glibc
#endif

/// Text to standard output or error, written whole at once (a line a
/// pipe or a log file sees at once). FileHandle is not in
/// FoundationEssentials, which is all the tool links.
enum StandardStream {
    static func output(_ text: String) { write(1, text) }
    static func error(_ text: String) { write(2, text) }

    private static func write(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            bytes = bytes.dropFirst(n)
        }
    }
}
