/// A value in the tree together with the name it is known by in messages
/// and the entry that holds it.
struct Field {
    var name: String
    /// The key of the mapping entry, or the list item itself.
    var entryLocation: SourcePosition
    var node: YAMLNode

    init(_ entry: YAMLEntry) {
        name = entry.key
        entryLocation = entry.keyLocation
        node = entry.value
    }

    init(name: String, item: YAMLNode) {
        self.name = name
        entryLocation = item.location
        node = item
    }

    /// Already reported by the reader (an alias): checks skip it quietly.
    var isInvalid: Bool {
        if case .invalid = node.content { return true }
        return false
    }

    /// Where a wrong value is reported: at the value, except an empty one,
    /// whose mark libyaml puts wherever the next token happens to start.
    var valueLocation: SourcePosition { node.isNull ? entryLocation : node.location }
}

/// A mapping's entries by key (the reader already rejected duplicates).
struct Keyed {
    var entries: [YAMLEntry]

    subscript(key: String) -> Field? { entries.first { $0.key == key }.map(Field.init) }
}

/// Typed reading of tree values. Every check reports into `diagnostics` and
/// returns nil for a bad value, so one run finds as many errors as it can.
struct ProfileDecoder {
    /// The profile path as given, for diagnostics.
    let file: String
    /// Absolute folder of the profile: relative paths start here.
    let directory: String
    let environment: [String: String]
    let checkFiles: Bool
    var diagnostics: [Diagnostic] = []

    mutating func error(_ message: String, at location: SourcePosition, hint: String? = nil) {
        diagnostics.append(Diagnostic(severity: .error, file: file, line: location.line, column: location.column,
                                      message: message, hint: hint))
    }

    mutating func warning(_ message: String, at location: SourcePosition, hint: String? = nil) {
        diagnostics.append(Diagnostic(severity: .warning, file: file, line: location.line, column: location.column,
                                      message: message, hint: hint))
    }

    // MARK: collections

    /// The entries of a mapping, unknown keys reported at the key. An empty
    /// value counts as an empty mapping when `emptyAllowed`.
    mutating func mapping(_ field: Field, _ what: String, keys: [String]? = nil, emptyAllowed: Bool = true) -> Keyed? {
        if field.isInvalid { return nil }
        if field.node.isNull && emptyAllowed { return Keyed(entries: []) }
        guard case .mapping(let entries) = field.node.content else {
            error("\(what) must be a mapping, found \(field.node.summary)", at: field.valueLocation)
            return nil
        }
        if let keys {
            for entry in entries where !keys.contains(entry.key) {
                error("unknown key '\(entry.key)' in \(what)", at: entry.keyLocation,
                      hint: Suggestion.hint(for: entry.key, in: keys))
            }
        }
        return Keyed(entries: entries)
    }

    mutating func sequence(_ field: Field, _ what: String, hint: String? = nil) -> [YAMLNode]? {
        if field.isInvalid { return nil }
        if field.node.isNull { return [] }
        guard case .sequence(let items) = field.node.content else {
            error("\(what) must be a list, found \(field.node.summary)", at: field.valueLocation, hint: hint)
            return nil
        }
        return items
    }

    // MARK: scalars

    mutating func string(_ field: Field) -> String? {
        if field.isInvalid { return nil }
        guard case .scalar(let text, _) = field.node.content, !field.node.isNull else {
            error("\(field.name) must be a string, found \(field.node.summary)", at: field.valueLocation)
            return nil
        }
        guard !text.isEmpty else {
            error("\(field.name) must not be empty", at: field.valueLocation)
            return nil
        }
        return text
    }

    /// A YAML integer, decimal or 0x-hex (architecture.md), within `range`.
    mutating func integer(_ field: Field, in range: ClosedRange<Int>, rangeText: String) -> Int? {
        if field.isInvalid { return nil }
        guard case .scalar(let text, let quoted) = field.node.content, !field.node.isNull else {
            error("\(field.name) must be an integer, found \(field.node.summary)", at: field.valueLocation)
            return nil
        }
        let parsed = IntegerLiteral.parse(text)
        if quoted {
            // A number in quotes is a string to YAML; say so rather than guess.
            if case .value = parsed {
                error("\(field.name) must be a number, not a quoted string", at: field.valueLocation,
                      hint: "remove the quotes: \(field.name): \(text)")
            } else {
                error("\(field.name) must be an integer (decimal or 0x-hex), found '\(text)'", at: field.valueLocation)
            }
            return nil
        }
        switch parsed {
        case .value(let value) where range.contains(value):
            return value
        case .value, .tooLarge:
            error("\(field.name) \(text) is out of range \(rangeText)", at: field.valueLocation)
        case .leadingZero:
            // YAML 1.1 reads 0043 as octal, YAML 1.2 as decimal: refuse to pick.
            let digits = text.drop { $0 == "0" }
            error("ambiguous number '\(text)': leading zeros are not allowed", at: field.valueLocation,
                  hint: "write 0x\(text) for hex or \(digits.isEmpty ? "0" : digits) for decimal")
        case .invalid:
            error("\(field.name) must be an integer (decimal or 0x-hex), found '\(text)'", at: field.valueLocation)
        }
        return nil
    }

    mutating func bool(_ field: Field) -> Bool? {
        if field.isInvalid { return nil }
        guard case .scalar(let text, let quoted) = field.node.content, !field.node.isNull else {
            error("\(field.name) must be true or false, found \(field.node.summary)", at: field.valueLocation)
            return nil
        }
        let value: Bool? = switch text {
        case "true", "True", "TRUE": true
        case "false", "False", "FALSE": false
        default: nil
        }
        if let value, quoted {
            error("\(field.name) must be true or false, not a quoted string", at: field.valueLocation,
                  hint: "remove the quotes: \(field.name): \(value)")
            return nil
        }
        guard let value else {
            error("\(field.name) must be true or false, found '\(text)'", at: field.valueLocation)
            return nil
        }
        return value
    }

    /// One of a fixed set of words, with a suggestion for a near miss.
    mutating func choice<T: RawRepresentable & CaseIterable>(_ field: Field, _ what: String) -> T?
    where T.RawValue == String {
        guard let text = string(field) else { return nil }
        if let value = T(rawValue: text) { return value }
        error("unknown \(what) '\(text)'", at: field.valueLocation,
              hint: Suggestion.hint(for: text, in: T.allCases.map(\.rawValue)))
        return nil
    }

    /// A path resolved from the profile's folder; with `checkFiles`, the file
    /// must exist and be readable (validate checks referenced files).
    mutating func filePath(_ field: Field, _ what: String) -> String? {
        guard let text = string(field) else { return nil }
        let path = Paths.resolve(text, from: directory)
        guard checkFiles else { return path }
        let relativeHint = text.hasPrefix("/") ? nil : "relative paths start from the profile's folder, \(directory)"
        switch Platform.fileKind(path) {
        case .missing: error("\(what) not found: \(path)", at: field.valueLocation, hint: relativeHint)
        case .directory: error("\(what) is a directory, not a file: \(path)", at: field.valueLocation)
        case .regular, .other:
            if Platform.isReadable(path) { return path }
            error("\(what) is not readable: \(path)", at: field.valueLocation)
        }
        return nil
    }
}

/// YAML integers as architecture.md allows them: decimal or 0x-hex.
enum IntegerLiteral: Equatable {
    case value(Int)
    case tooLarge
    case leadingZero
    case invalid

    static func parse(_ text: String) -> IntegerLiteral {
        let isDigit: (Character) -> Bool = { $0.isASCII && $0.isNumber }
        if text.hasPrefix("0x") || text.hasPrefix("0X") {
            let digits = text.dropFirst(2)
            guard !digits.isEmpty, digits.allSatisfy(\.isHexDigit) else { return .invalid }
            return Int(digits, radix: 16).map(IntegerLiteral.value) ?? .tooLarge
        }
        let negative = text.hasPrefix("-")
        let digits = negative || text.hasPrefix("+") ? text.dropFirst() : Substring(text)
        guard !digits.isEmpty, digits.allSatisfy(isDigit) else { return .invalid }
        if digits.count > 1 && digits.hasPrefix("0") { return .leadingZero }
        guard let magnitude = Int(digits) else { return .tooLarge }
        return .value(negative ? -magnitude : magnitude)
    }
}
