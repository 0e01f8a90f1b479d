/// Just enough XML to read a libvirt domain definition: elements with
/// their attributes and their path from the root; text, comments,
/// processing instructions, CDATA and the doctype are skipped. FoundationXML
/// (libxml2, and through it ICU) did this before; it was the biggest part
/// of the binary's shared-library closure, for a few attributes.
struct XMLElementInfo: Equatable {
    /// Element names from the root to this one: ["domain", "devices", "graphics"].
    var path: [String]
    var attributes: [String: String]
    var name: String { path.last ?? "" }
}

enum XMLScanError: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    var description: String {
        switch self { case .malformed(let why): "malformed XML: \(why)" }
    }
}

enum XMLScan {
    /// Every element in document order. Throws on unbalanced tags or an
    /// unterminated construct (the input is libvirt's own output, so this
    /// is a guard, not a validator).
    static func elements(_ xml: String) throws(XMLScanError) -> [XMLElementInfo] {
        let b = Array(xml.utf8)
        var i = 0, stack: [String] = [], out: [XMLElementInfo] = []
        func skip(past end: String) throws(XMLScanError) {
            let e = Array(end.utf8)
            while i + e.count <= b.count {
                if Array(b[i..<(i + e.count)]) == e { i += e.count; return }
                i += 1
            }
            throw .malformed("unterminated, expected \(end)")
        }
        func starts(_ s: String) -> Bool {
            let p = Array(s.utf8)
            return i + p.count <= b.count && Array(b[i..<(i + p.count)]) == p
        }
        while i < b.count {
            guard b[i] == UInt8(ascii: "<") else { i += 1; continue }
            if starts("<!--") { try skip(past: "-->"); continue }
            if starts("<![CDATA[") { try skip(past: "]]>"); continue }
            if starts("<?") { try skip(past: "?>"); continue }
            if starts("<!") { try skip(past: ">"); continue }
            i += 1
            let closing = i < b.count && b[i] == UInt8(ascii: "/")
            if closing { i += 1 }
            let name = word()
            guard !name.isEmpty else { throw .malformed("a tag without a name") }
            if closing {
                guard stack.popLast() == name else { throw .malformed("</\(name)> does not close the open element") }
                try skip(past: ">")
                continue
            }
            var attributes: [String: String] = [:]
            while true {
                while i < b.count, isSpace(b[i]) { i += 1 }
                guard i < b.count else { throw .malformed("unterminated <\(name)>") }
                if b[i] == UInt8(ascii: ">") {
                    i += 1
                    stack.append(name)
                    out.append(XMLElementInfo(path: stack, attributes: attributes))
                    break
                }
                if b[i] == UInt8(ascii: "/") {
                    try skip(past: ">")
                    out.append(XMLElementInfo(path: stack + [name], attributes: attributes))
                    break
                }
                let key = word()
                while i < b.count, isSpace(b[i]) { i += 1 }
                guard !key.isEmpty, i < b.count, b[i] == UInt8(ascii: "=") else {
                    throw .malformed("attribute without a value in <\(name)>")
                }
                i += 1
                while i < b.count, isSpace(b[i]) { i += 1 }
                guard i < b.count, b[i] == UInt8(ascii: "'") || b[i] == UInt8(ascii: "\"") else {
                    throw .malformed("unquoted attribute \(key) in <\(name)>")
                }
                let quote = b[i]
                i += 1
                let start = i
                while i < b.count, b[i] != quote { i += 1 }
                guard i < b.count else { throw .malformed("unterminated attribute \(key)") }
                attributes[key] = decodeEntities(String(decoding: b[start..<i], as: UTF8.self))
                i += 1
            }
        }
        guard stack.isEmpty else { throw .malformed("<\(stack.last!)> is not closed") }
        return out

        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d }
        func word() -> String {
            let start = i
            while i < b.count, !isSpace(b[i]), ![UInt8(ascii: ">"), UInt8(ascii: "/"), UInt8(ascii: "=")].contains(b[i]) {
                i += 1
            }
            return String(decoding: b[start..<i], as: UTF8.self)
        }
    }

    /// The five named entities and numeric references (a password may
    /// hold any character, and libvirt escapes what XML requires).
    static func decodeEntities(_ text: String) -> String {
        guard text.contains("&") else { return text }
        var out = ""
        var rest = Substring(text)
        while let amp = rest.firstIndex(of: "&") {
            out += rest[..<amp]
            guard let semi = rest[amp...].firstIndex(of: ";") else { break }
            let entity = rest[rest.index(after: amp)..<semi]
            let named = ["amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'"]
            if let v = named[String(entity)] {
                out += v
            } else if entity.hasPrefix("#x") || entity.hasPrefix("#X"), let n = UInt32(entity.dropFirst(2), radix: 16),
                      let u = Unicode.Scalar(n) {
                out.unicodeScalars.append(u)
            } else if entity.hasPrefix("#"), let n = UInt32(entity.dropFirst()), let u = Unicode.Scalar(n) {
                out.unicodeScalars.append(u)
            } else {
                out += rest[amp...semi]
            }
            rest = rest[rest.index(after: semi)...]
        }
        return out + rest
    }
}
