/// Reading the secret named by an endpoint. Kept apart from loading so the
/// secret is read only when it is needed (at connect time) and never ends up
/// in a `Profile` value that may be printed or compared.
public enum PasswordError: Error, Sendable, Hashable, CustomStringConvertible {
    case unsetVariable(String)
    case unreadableFile(path: String, reason: String)
    case notUTF8(path: String)

    public var description: String {
        switch self {
        case .unsetVariable(let name): return "password variable \(name) is not set"
        case .unreadableFile(let path, let reason): return "cannot read password file \(path): \(reason)"
        case .notUTF8(let path): return "password file \(path) is not UTF-8 text"
        }
    }
}

extension PasswordSource {
    /// The password. A file's one trailing newline (`\n` or `\r\n`) is not
    /// part of it, since editors and `echo` add one (architecture.md). An unset
    /// variable is an error here: apply fails that endpoint only, while
    /// validate merely warns about it.
    public func load(environment: [String: String]) throws(PasswordError) -> String {
        switch self {
        case .env(let name):
            guard let value = environment[name] else { throw .unsetVariable(name) }
            return value
        case .file(let path):
            var bytes: [UInt8]
            do { bytes = try Platform.readFile(path) } catch { throw .unreadableFile(path: path, reason: error.description) }
            if bytes.last == UInt8(ascii: "\n") {
                bytes.removeLast()
                if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
            }
            guard let text = String(validating: bytes, as: UTF8.self) else { throw .notUTF8(path: path) }
            return text
        }
    }
}

extension Endpoint {
    /// The endpoint's password, nil when it has none.
    public func loadPassword(environment: [String: String]) throws(PasswordError) -> String? {
        guard let password else { return nil }
        return try password.load(environment: environment)
    }
}
