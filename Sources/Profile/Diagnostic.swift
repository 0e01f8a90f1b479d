/// A position in the profile text: 1-based line and column, libyaml's
/// 0-based mark plus one (architecture.md). Columns count characters, as libyaml does.
/// (Not called SourceLocation: Swift Testing has a type of that name.)
public struct SourcePosition: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public static func < (a: Self, b: Self) -> Bool { (a.line, a.column) < (b.line, b.column) }

    public var description: String { "\(line):\(column)" }
}

/// One finding about a profile, printed as `FILE:LINE:COL: error: message`.
/// A hint, when there is one, follows on the same line after `; ` so every
/// diagnostic stays one line (grep- and editor-friendly).
public struct Diagnostic: Sendable, Hashable, CustomStringConvertible {
    public enum Severity: String, Sendable, Hashable {
        case error, warning
    }

    public var severity: Severity
    /// The profile path as the user gave it.
    public var file: String
    /// 1-based; 0 when the finding is about the whole file (it could not be read).
    public var line: Int
    public var column: Int
    public var message: String
    public var hint: String?

    public init(severity: Severity, file: String, line: Int, column: Int, message: String, hint: String? = nil) {
        self.severity = severity
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        self.hint = hint
    }

    public var location: SourcePosition { SourcePosition(line: line, column: column) }

    public var description: String {
        let position = line > 0 ? "\(file):\(line):\(column)" : file
        let text = hint.map { "\(message); \($0)" } ?? message
        return "\(position): \(severity.rawValue): \(text)"
    }
}
