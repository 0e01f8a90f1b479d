import CYAML

/// The YAML document as a small tree that remembers where every node starts,
/// so each diagnostic can point at the exact line and column. Built from
/// libyaml's event API; nothing here parses YAML text by hand.
struct YAMLNode: Sendable {
    enum Content: Sendable {
        /// `quoted` is true for every non-plain style ('…', "…", | and >):
        /// such a scalar is always a string, never a number or a boolean.
        case scalar(String, quoted: Bool)
        case sequence([YAMLNode])
        case mapping([YAMLEntry])
        /// Stands in for a refused alias: already reported, so every check
        /// passes over it quietly instead of adding a second error.
        case invalid
    }

    var content: Content
    var location: SourcePosition

    /// YAML's null: an empty plain scalar, `~` or `null`.
    var isNull: Bool {
        if case .scalar(let text, false) = content { return ["", "~", "null", "Null", "NULL"].contains(text) }
        return false
    }

    /// How the node reads in a message; scalars are shown as written.
    var summary: String {
        switch content {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .scalar(let text, _): return isNull ? "nothing" : "'\(text)'"
        case .invalid: return "an alias"
        }
    }
}

/// A mapping entry: the key's own location is kept because unknown and
/// duplicate keys, and structural faults, point at the key.
struct YAMLEntry: Sendable {
    var key: String
    var keyLocation: SourcePosition
    var value: YAMLNode
}

enum YAMLReader {
    /// Parses one YAML document. On a syntax error the partial tree is
    /// dropped (libyaml cannot recover) and only that error is returned.
    /// Other findings (duplicate keys, aliases, non-string keys, a second
    /// document) are reported and parsing goes on.
    static func parse(_ bytes: [UInt8], file: String) -> (root: YAMLNode?, diagnostics: [Diagnostic]) {
        guard !bytes.isEmpty else { return (nil, []) }
        let parser = UnsafeMutablePointer<yaml_parser_t>.allocate(capacity: 1)
        defer { parser.deallocate() }
        guard yaml_parser_initialize(parser) == 1 else {
            return (nil, [Diagnostic(severity: .error, file: file, line: 0, column: 0, message: "out of memory reading YAML")])
        }
        defer { yaml_parser_delete(parser) }
        return bytes.withUnsafeBufferPointer { buffer in
            yaml_parser_set_input_string(parser, buffer.baseAddress, buffer.count)
            var builder = TreeBuilder(file: file)
            var event = yaml_event_t()
            while true {
                guard yaml_parser_parse(parser, &event) == 1 else {
                    return (nil, [syntaxError(parser.pointee, bytes: bytes, file: file)])
                }
                defer { yaml_event_delete(&event) }
                if event.type == YAML_STREAM_END_EVENT || !builder.consume(event) { break }
            }
            return (builder.root, builder.diagnostics)
        }
    }

    private static func syntaxError(_ parser: yaml_parser_t, bytes: [UInt8], file: String) -> Diagnostic {
        let problem = parser.problem.map { String(cString: $0) } ?? "malformed YAML"
        // A reader error (bad encoding) has only a byte offset, no mark.
        let location = parser.error == YAML_READER_ERROR
            ? location(ofOffset: parser.problem_offset, in: bytes)
            : SourcePosition(parser.problem_mark)
        var hint: String?
        if let context = parser.context {
            hint = "\(String(cString: context)) at line \(parser.context_mark.line + 1), column \(parser.context_mark.column + 1)"
        }
        return Diagnostic(severity: .error, file: file, line: location.line, column: location.column,
                          message: "invalid YAML: \(problem)", hint: hint)
    }

    private static func location(ofOffset offset: Int, in bytes: [UInt8]) -> SourcePosition {
        var line = 1, column = 1
        for byte in bytes.prefix(offset) {
            if byte == UInt8(ascii: "\n") { line += 1; column = 1 }
            else if byte & 0xC0 != 0x80 { column += 1 }  // count characters, not continuation bytes
        }
        return SourcePosition(line: line, column: column)
    }
}

extension SourcePosition {
    init(_ mark: yaml_mark_t) {
        self.init(line: Int(mark.line) + 1, column: Int(mark.column) + 1)
    }
}

/// Turns the event stream into a tree with an explicit stack of open
/// collections.
private struct TreeBuilder {
    private enum Frame {
        case sequence(SourcePosition, [YAMLNode])
        /// `pendingKey` is set between a key and its value; a nil key name
        /// means the key was not a string and its value is dropped.
        case mapping(SourcePosition, [YAMLEntry], pendingKey: (name: String?, location: SourcePosition)?)
    }

    /// Deepest nesting of collections accepted. A profile needs about 6
    /// levels; the bound keeps a hostile or generated file from building a
    /// tree whose recursive teardown and decoding would overflow the stack.
    static let maxDepth = 64

    let file: String
    private var stack: [Frame] = []
    var root: YAMLNode?
    var documents = 0
    var diagnostics: [Diagnostic] = []

    init(file: String) { self.file = file }

    /// Returns false to stop reading (a second document).
    mutating func consume(_ event: yaml_event_t) -> Bool {
        let location = SourcePosition(event.start_mark)
        switch event.type {
        case YAML_DOCUMENT_START_EVENT:
            documents += 1
            if documents > 1 {
                report(location, "a profile is one YAML document; found a second one",
                       hint: "remove the '---' line and what follows, or merge the documents")
                return false
            }
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            let text = String(decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
            add(YAMLNode(content: .scalar(text, quoted: scalar.style != YAML_PLAIN_SCALAR_STYLE), location: location))
        case YAML_ALIAS_EVENT:
            // Aliases would let one entry stand for many; a profile is read
            // by people, so every value is written out where it applies.
            let name = event.data.alias.anchor.map { String(cString: $0) } ?? ""
            report(location, "aliases (*\(name)) are not supported in a profile", hint: "write the value out in full")
            add(YAMLNode(content: .invalid, location: location))
        case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
            guard stack.count < Self.maxDepth else {
                report(location, "the document is nested more than \(Self.maxDepth) levels deep",
                       hint: "a profile needs only a few levels; check for runaway brackets or indentation")
                root = nil
                stack = []
                return false
            }
            stack.append(event.type == YAML_SEQUENCE_START_EVENT
                         ? .sequence(location, []) : .mapping(location, [], pendingKey: nil))
        case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
            switch stack.removeLast() {
            case .sequence(let start, let items): add(YAMLNode(content: .sequence(items), location: start))
            case .mapping(let start, let entries, _): add(YAMLNode(content: .mapping(entries), location: start))
            }
        default:
            break
        }
        return true
    }

    private mutating func add(_ node: YAMLNode) {
        guard let top = stack.popLast() else {
            root = node
            return
        }
        switch top {
        case .sequence(let start, var items):
            items.append(node)
            stack.append(.sequence(start, items))
        case .mapping(let start, let entries, nil):
            var keyName: String?
            if case .scalar(let text, _) = node.content {
                keyName = text
            } else if case .invalid = node.content {
                // An alias as key: reported already.
            } else {
                report(node.location, "a key must be a string, found \(node.summary)")
            }
            stack.append(.mapping(start, entries, pendingKey: (keyName, node.location)))
        case .mapping(let start, var entries, let key?):
            if let name = key.name {
                if let first = entries.first(where: { $0.key == name }) {
                    report(key.location, "duplicate key '\(name)'",
                           hint: "first given at line \(first.keyLocation.line), column \(first.keyLocation.column)")
                } else {
                    entries.append(YAMLEntry(key: name, keyLocation: key.location, value: node))
                }
            }
            stack.append(.mapping(start, entries, pendingKey: nil))
        }
    }

    private mutating func report(_ location: SourcePosition, _ message: String, hint: String? = nil) {
        diagnostics.append(Diagnostic(severity: .error, file: file, line: location.line, column: location.column,
                                      message: message, hint: hint))
    }
}
