#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif

/// UTC timestamps as RFC 3339 text (2026-12-02T14:14:25Z, or with
/// milliseconds for log lines), written by hand from gmtime_r: Foundation's
/// ISO8601DateFormatter loads ICU's calendar data, several megabytes of
/// resident memory in a daemon that prints only UTC.
public enum RFC3339 {
    public static func string(_ date: Date = Date(), milliseconds: Bool = false) -> String {
        let since1970 = date.timeIntervalSince1970
        var seconds = time_t(since1970.rounded(.down))
        var t = tm()
        gmtime_r(&seconds, &t)
        var s = digits(Int(t.tm_year) + 1900, 4) + "-" + digits(Int(t.tm_mon) + 1, 2) + "-" + digits(Int(t.tm_mday), 2)
        s += "T" + digits(Int(t.tm_hour), 2) + ":" + digits(Int(t.tm_min), 2) + ":" + digits(Int(t.tm_sec), 2)
        if milliseconds {
            let ms = min(999, Int((since1970 - since1970.rounded(.down)) * 1000))
            s += "." + digits(ms, 3)
        }
        return s + "Z"
    }

    private static func digits(_ value: Int, _ width: Int) -> String {
        let text = String(value)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }
}
