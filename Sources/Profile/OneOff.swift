import Common

/// `usbredir attach DEVICE --to ENDPOINT`: a profile of one assignment, built
/// in memory from the command line, so attach runs the same engine as apply.
public enum OneOff {
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// The names the in-memory profile gives its endpoint and assignment.
    public static let endpointName = "target"
    public static let assignmentName = "attached"

    /// The profile; `directory` is where relative paths start (the working
    /// directory) and the profile's nominal file lives.
    public static func profile(device: String, endpoint: String, password: PasswordSource?, channel: UInt8?,
                               log: LogLevel, directory: String) throws(ParseError) -> Profile {
        let kind = try endpointKind(endpoint, directory: directory)
        let target = Endpoint(name: endpointName, kind: kind, password: password, location: Self.nowhere)
        if password != nil, !target.isSpice { throw ParseError("a password applies to spice endpoints only") }
        if channel != nil, !target.isSpice { throw ParseError("--channel applies to spice endpoints only") }
        let assignment = Assignment(name: assignmentName, endpoint: endpointName, channel: channel,
                                    source: try source(device, directory: directory), location: Self.nowhere)
        return Profile(log: log, endpoints: [target], devices: [assignment],
                       sourcePath: Paths.resolve("attach.yaml", from: directory))
    }

    static let nowhere = SourcePosition(line: 0, column: 0)

    static let endpointForms = "spice://HOST:PORT, spice+unix://PATH, libvirt://DOMAIN[?uri=URI], tcp://HOST:PORT or listen://ADDRESS:PORT"

    /// An endpoint as a URL: spice://, spice+unix://, tcp:// (raw usbredir,
    /// we connect) or listen:// (raw usbredir, the VM connects).
    public static func endpointKind(_ text: String, directory: String) throws(ParseError) -> Endpoint.Kind {
        let parts = text.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw ParseError("endpoint '\(text)' is not a URL; use \(endpointForms)")
        }
        let scheme = String(parts[0]), rest = String(parts[1])
        if scheme == "spice+unix" {
            guard !rest.isEmpty else { throw ParseError("spice+unix:// needs a socket path") }
            let path = Paths.resolve(rest, from: directory)
            guard path.utf8.count <= ProfileDecoder.maxSocketPathBytes else {
                throw ParseError("socket path is longer than \(ProfileDecoder.maxSocketPathBytes) bytes: \(path)")
            }
            return .spiceUnix(path)
        }
        if scheme == "libvirt" { return try libvirtKind(rest) }
        let make: (HostPort) -> Endpoint.Kind
        switch scheme {
        case "spice": make = Endpoint.Kind.spice
        case "tcp": make = Endpoint.Kind.usbredir
        case "listen": make = Endpoint.Kind.listen
        default: throw ParseError("unknown endpoint scheme '\(scheme)://'; use \(endpointForms)")
        }
        if rest.contains("?") || rest.contains("@") {
            throw ParseError("endpoint '\(text)': give a password with --password-file or --password-env, not in the URL")
        }
        let hostPort = rest.hasSuffix("/") ? String(rest.dropLast()) : rest
        switch HostPort.parse(hostPort) {
        case .success(let address): return make(address)
        case .failure(.portOutOfRange(let port)): throw ParseError("port \(port) is out of range 1...65535")
        case .failure: throw ParseError("endpoint '\(text)' must be \(scheme)://HOST:PORT (IPv6 in brackets)")
        }
    }

    /// `libvirt://lab-vm-a` or `libvirt://lab-vm-a?uri=qemu:///session`.
    static func libvirtKind(_ rest: String) throws(ParseError) -> Endpoint.Kind {
        let parts = rest.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let domain = String(parts[0].hasSuffix("/") ? parts[0].dropLast() : parts[0])
        guard !domain.isEmpty, !domain.contains("/") else { throw ParseError("libvirt:// needs a domain name") }
        guard parts.count == 2 else { return .libvirt(domain: domain, uri: Endpoint.defaultLibvirtURI) }
        guard parts[1].hasPrefix("uri="), parts[1].count > 4 else {
            throw ParseError("libvirt://\(domain)?\(parts[1]): the only parameter is uri=, e.g. ?uri=qemu:///session")
        }
        return .libvirt(domain: domain, uri: String(parts[1].dropFirst(4)))
    }

    static let deviceForms = "VID:PID, VID:PID:SERIAL, a port path such as 1-3.2, or image:PATH[,ro]"

    /// A device as `list` shows it: VID:PID, VID:PID:SERIAL, a bus-port
    /// path, or image:PATH[,ro] for a virtual stick over a disk image.
    public static func source(_ text: String, directory: String) throws(ParseError) -> Assignment.Source {
        if text.hasPrefix("image:") {
            var path = String(text.dropFirst("image:".count))
            let readOnly = path.hasSuffix(",ro")
            if readOnly { path.removeLast(3) }
            guard !path.isEmpty else { throw ParseError("image: needs a disk image path") }
            let absolute = Paths.resolve(path, from: directory)
            guard Platform.fileKind(absolute) == .regular else { throw ParseError("image file not found: \(absolute)") }
            guard readOnly ? Platform.isReadable(absolute) : Platform.isWritable(absolute) else {
                throw ParseError("image file is not \(readOnly ? "readable" : "writable"): \(absolute)"
                                 + (readOnly ? "" : " (add ,ro to serve it read-only)"))
            }
            return .virtual(VirtualDevice(kind: .massStorage, image: absolute, readOnly: readOnly))
        }
        if MatchRule.isPortPath(text) { return .match(MatchRule(port: text)) }
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, let vendor = hexID(parts[0]), let product = hexID(parts[1]) else {
            throw ParseError("device '\(text)' is not \(deviceForms)")
        }
        let serial = parts.count == 3 ? String(parts[2]) : nil
        if serial?.isEmpty == true { throw ParseError("device '\(text)' has an empty serial") }
        return .match(MatchRule(vendors: [vendor], products: [product], serial: serial))
    }

    /// A 16-bit id in hex, as `list` prints it (0x allowed).
    private static func hexID(_ text: Substring) -> UInt16? {
        let digits = text.hasPrefix("0x") || text.hasPrefix("0X") ? text.dropFirst(2) : text
        guard (1...4).contains(digits.count), digits.allSatisfy(\.isHexDigit) else { return nil }
        return UInt16(digits, radix: 16)
    }
}
