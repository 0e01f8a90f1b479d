import Common

/// Parsing `host:port` as a profile writes it; the errors become diagnostics.
extension HostPort {
    enum ParseError: Error, Equatable {
        case malformed
        /// An IPv6 address without brackets.
        case bareIPv6
        case portOutOfRange(String)
    }

    static func parse(_ text: String) -> Result<HostPort, ParseError> {
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return .failure(.malformed)
            }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return .failure(.malformed) }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            if host.contains(":") { return .failure(.bareIPv6) }
        }
        guard !host.isEmpty, !host.contains(where: \.isWhitespace),
              !port.isEmpty, port.allSatisfy({ $0.isASCII && $0.isNumber }) else { return .failure(.malformed) }
        guard let number = Int(port), ports.contains(number) else { return .failure(.portOutOfRange(String(port))) }
        return .success(HostPort(host: String(host), port: number))
    }
}

extension HostPort {
    /// A `host:port` from the command line (`apply --metrics`), checked as
    /// the profile checks it; the error text says what is wrong.
    public static func commandLine(_ text: String) -> Result<HostPort, HostPortSyntaxError> {
        switch parse(text) {
        case .success(let address): .success(address)
        case .failure(.bareIPv6): .failure(HostPortSyntaxError("write IPv6 addresses in brackets: [::1]:9477, found '\(text)'"))
        case .failure(.portOutOfRange(let port)): .failure(HostPortSyntaxError("port \(port) is out of range 1...65535"))
        case .failure(.malformed): .failure(HostPortSyntaxError("expected HOST:PORT such as 127.0.0.1:9477, found '\(text)'"))
        }
    }
}

public struct HostPortSyntaxError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
