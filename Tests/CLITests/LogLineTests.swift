import Logging
import Testing
@testable import usbredir

/// Text logs carry strings a peer chose (a SPICE NOTIFY text, a usbredir
/// hello version, a device's string descriptors, an error message with any
/// of these). One event must stay one line, and a peer must not be able to
/// forge a line or send terminal escape sequences to whoever reads the log.
@Suite struct LogLineTests {
    func line(_ message: Logger.Message, _ metadata: Logger.Metadata = [:]) -> String {
        let handler = LineLogHandler(label: "t", format: .text, logLevel: .trace)
        return handler.line(for: LogEvent(level: .notice, message: message, metadata: metadata, source: nil,
                                          file: #fileID, function: #function, line: #line), time: "T")
    }

    @Test func controlCharactersInTheMessageAreEscaped() {
        let l = line("SPICE server notice: hi\nT critical forged line\r\u{1b}[2J\u{07}\u{7f}\u{85}\t end")
        #expect(l == "T notice SPICE server notice: hi\\nT critical forged line\\r\\u{1b}[2J\\u{07}\\u{7f}\\u{85}\\t end\n",
                "\(l.debugDescription)")
    }

    @Test func controlCharactersInMetadataAreEscaped() {
        let l = line("hello", ["version": "qemu\n2026-01-01 error [x=y] fake", "text": "a\u{0}b"])
        #expect(l == "T notice [text=a\\u{00}b version=qemu\\n2026-01-01 error [x=y] fake] hello\n", "\(l.debugDescription)")
        #expect(l.filter { $0 == "\n" }.count == 1)
    }

    @Test func aBackslashIsEscapedSoEscapesAreUnambiguous() {
        #expect(line("a\\nb") == "T notice a\\\\nb\n")
    }

    @Test func printableTextIsUnchanged() {
        #expect(line("Virtual Disk – ünïcödé ✓", ["k": "v"]) == "T notice [k=v] Virtual Disk – ünïcödé ✓\n")
    }
}
