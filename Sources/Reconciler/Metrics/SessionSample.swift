#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Session

/// One session's numbers as /metrics shows them, read from the counters
/// `status` shows (nothing is counted twice on the transfer path).
struct SessionSample: Sendable {
    var assignment: String
    var endpoint: String
    var state: AssignmentState
    var counters: SessionCounters
    /// Connections to the endpoint after the first.
    var reconnects: Int
}

/// The process's own figures: resident memory and open descriptors.
struct ProcessSample: Sendable, Equatable {
    var residentBytes: Int
    var openFDs: Int

    /// From /proc/self (Linux); zeros where it cannot be read.
    static func current() -> ProcessSample {
        ProcessSample(residentBytes: residentBytes(), openFDs: openFDs())
    }

    /// statm's second field is resident pages.
    private static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Entries of /proc/self/fd, less the one this count holds open.
    private static func openFDs() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { count += 1 }
        }
        return max(0, count - 1)
    }
}
