import Common
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging

/// One line per event on standard error, written with a single write(2) so a
/// pipe or a log file sees each line at once and lines never interleave.
struct LineLogHandler: LogHandler {
    enum Format: String, Sendable, CaseIterable { case text, json }

    let label: String
    let format: Format
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var bytes = Array(line(for: event, time: Self.timestamp()).utf8)
        bytes.withUnsafeMutableBytes { p in _ = write(2, p.baseAddress, p.count) }
    }

    /// The line written for `event`, newline included.
    func line(for event: LogEvent, time: String) -> String {
        let level = event.level, message = event.message
        let all = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let text: String
        switch format {
        case .text:
            // Messages and metadata carry peer strings (a SPICE notice, a
            // hello's version, device strings): escaped, one event stays one line.
            let meta = all.sorted { $0.key < $1.key }
                .map { "\(Self.escaped($0.key))=\(Self.escaped("\($0.value)"))" }.joined(separator: " ")
            text = "\(time) \(level.rawValue)\(meta.isEmpty ? "" : " [\(meta)]") \(Self.escaped("\(message)"))\n"
        case .json:
            var object: [String: String] = ["time": time, "level": level.rawValue, "message": "\(message)"]
            for (k, v) in all { object[k] = "\(v)" }
            let data = (try? JSONEncoder.sortedKeysForLogs.encode(object)) ?? Data()
            text = String(decoding: data, as: UTF8.self) + "\n"
        }
        return text
    }

    /// `s` with control characters (C0, DEL, C1, line and paragraph
    /// separators) written as \n, \r, \t or \u{XX}, and a backslash as \\,
    /// so no string can end a line early, forge another, or drive a terminal.
    static func escaped(_ s: String) -> String {
        guard s.unicodeScalars.contains(where: needsEscape) else { return s }
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            guard needsEscape(u) else { out.append(u); continue }
            let text: String
            switch u {
            case "\\": text = "\\\\"
            case "\n": text = "\\n"
            case "\r": text = "\\r"
            case "\t": text = "\\t"
            default:
                let hex = String(u.value, radix: 16)
                text = "\\u{" + (hex.count < 2 ? "0" + hex : hex) + "}"
            }
            out.append(contentsOf: text.unicodeScalars)
        }
        return String(out)
    }

    private static func needsEscape(_ u: Unicode.Scalar) -> Bool {
        u.value < 0x20 || (0x7f...0x9f).contains(u.value) || u.value == 0x2028 || u.value == 0x2029 || u == "\\"
    }

    static func timestamp() -> String {
        RFC3339.string(milliseconds: true)
    }

    /// Installs the handler for the whole process.
    static func bootstrap(format: Format, level: Logger.Level) {
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, format: format, logLevel: level) }
    }
}

extension JSONEncoder {
    /// One log line as a JSON object with sorted keys.
    static let sortedKeysForLogs: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()
}
