import Common
extension ProfileDecoder {
    mutating func decodeDocument(_ root: YAMLNode?) -> DecodedDocument {
        var document = DecodedDocument()
        guard let root, !root.isNull else {
            error("the profile is empty", at: SourcePosition(line: 1, column: 1), hint: "a profile starts with 'version: 1'")
            return document
        }
        guard let top = mapping(Field(name: "profile", item: root), "the profile", keys: Keys.root, emptyAllowed: false) else {
            return document
        }
        if let field = top["version"] {
            if let version = integer(field, in: Int.min...Int.max, rangeText: "for an integer") {
                if version == Profile.supportedVersion { document.version = version } else {
                    error("unsupported profile version \(version)", at: field.valueLocation,
                          hint: "this usbredir reads version \(Profile.supportedVersion)")
                }
            }
        } else {
            error("missing 'version'", at: root.location, hint: "a profile starts with 'version: 1'")
        }
        if let field = top["log"], let level: LogLevel = choice(field, "log level") { document.log = level }
        if let field = top["metrics"] { document.metrics = decodeMetrics(field) }
        if let field = top["endpoints"], let entries = mapping(field, "endpoints") {
            document.endpoints = entries.entries.map { decodeEndpoint($0) }
        }
        if let field = top["devices"] { document.devices = decodeDevices(field, hostSection: nil) }
        if let field = top["hosts"], let entries = mapping(field, "hosts") {
            for entry in entries.entries {
                let what = "host section '\(entry.key)'"
                guard let section = mapping(Field(entry), what, keys: Keys.host) else { continue }
                document.hosts.append((entry.key, section["devices"].map { decodeDevices($0, hostSection: entry.key) } ?? []))
            }
        }
        return document
    }

    /// `metrics: HOST:PORT`: where apply serves Prometheus' /metrics. Off
    /// loopback it is a warning: the counters tell what runs where.
    private mutating func decodeMetrics(_ field: Field) -> HostPort? {
        guard let address = hostPort(field) else { return nil }
        if !Platform.isLoopback(address.host) {
            warning("metrics on \(address.host) can be scraped by anyone who reaches it", at: field.valueLocation,
                    hint: "serve it on 127.0.0.1 and let a local agent or a firewall rule reach it")
        }
        return address
    }

    // MARK: endpoints

    private mutating func decodeEndpoint(_ entry: YAMLEntry) -> DecodedEndpoint {
        let name = entry.key
        var decoded = DecodedEndpoint(name: name, location: entry.keyLocation)
        // The inline password is refused before the unknown-key check so the
        // message says what to do instead; its value is never looked at.
        if case .mapping(let entries) = entry.value.content, let inline = entries.first(where: { $0.key == "password" }) {
            error("inline passwords are not allowed", at: inline.keyLocation,
                  hint: "use password-file: PATH or password-env: VARIABLE")
        }
        let allowed = Keys.endpoint + ["password"]
        guard let fields = mapping(Field(entry), "endpoint '\(name)'", keys: allowed, emptyAllowed: false) else {
            return decoded
        }
        let kinds = Keys.endpointKinds.filter { fields[$0] != nil }
        guard kinds.count == 1, let kindName = kinds.first, let kindField = fields[kindName] else {
            let found = kinds.isEmpty ? "none" : Self.list(kinds)
            error("endpoint '\(name)' needs exactly one of spice, spice-tls, usbredir, listen, libvirt; found \(found)",
                  at: entry.keyLocation)
            return decoded
        }
        decoded.kindName = kindName
        let isSpice = decoded.isSpice ?? false
        var valid = true
        var address: HostPort?, unixPath: String?, domain: String?
        if kindName == "libvirt" {
            domain = libvirtDomain(kindField)
            valid = domain != nil
        } else if let written = Self.unixSocketText(kindField) {
            unixPath = socketPath(written, kindField)
            valid = unixPath != nil
        } else {
            address = hostPort(kindField)
            valid = address != nil
        }

        for key in ["ca-file", "host-subject"] where kindName != "spice-tls" {
            if let field = fields[key] {
                error("\(key) applies to spice-tls endpoints only", at: field.entryLocation)
                valid = false
            }
        }
        let uri = libvirtURI(fields["uri"], kindName: kindName)
        valid = valid && uri != nil
        var password: PasswordSource?
        let file = fields["password-file"], variable = fields["password-env"]
        if kindName == "libvirt" {
            for field in [file, variable].compactMap({ $0 }) {
                error("\(field.name) does not apply to libvirt endpoints", at: field.entryLocation,
                      hint: "the password comes from the domain's definition (its graphics passwd)")
                valid = false
            }
        } else if !isSpice {
            for field in [file, variable].compactMap({ $0 }) {
                error("\(field.name) applies to spice and spice-tls endpoints only", at: field.entryLocation,
                      hint: "raw usbredir has no authentication")
                valid = false
            }
        } else if file != nil && variable != nil {
            error("endpoint '\(name)' has both password-file and password-env; give one", at: entry.keyLocation)
            valid = false
        } else if let file {
            if let path = filePath(file, "password file") {
                password = .file(path)
                if checkFiles, let mode = Platform.permissions(path), mode & 0o077 != 0 {
                    warning("password file \(path) can be read by other users (mode \(String(mode, radix: 8)))",
                            at: file.valueLocation, hint: "chmod 600 it; --strict refuses it")
                }
            } else { valid = false }
        } else if let variable {
            if let variableName = string(variable) {
                password = .env(variableName)
                if environment[variableName] == nil {
                    warning("password variable \(variableName) is not set", at: variable.valueLocation,
                            hint: "apply fails endpoint '\(name)' until it is set")
                }
            } else { valid = false }
        }
        if fields["password"] != nil { valid = false }

        var caFile: String?, hostSubject: String?
        if kindName == "spice-tls" {
            if let field = fields["ca-file"] {
                caFile = filePath(field, "CA file")
                valid = valid && caFile != nil
            }
            if let field = fields["host-subject"] {
                hostSubject = string(field)
                valid = valid && hostSubject != nil
            }
        }
        let allowedPeers = decodeAllow(fields["allow"], kind: kindField, address: address)
        valid = valid && allowedPeers != nil
        guard valid, let allowedPeers else { return decoded }
        let kind: Endpoint.Kind
        if let domain, let uri {
            kind = .libvirt(domain: domain, uri: uri)
        } else if let unixPath {
            kind = .spiceUnix(unixPath)
        } else if let address {
            kind = switch kindName {
            case "spice": .spice(address)
            case "spice-tls": .spiceTLS(address, caFile: caFile, hostSubject: hostSubject)
            case "usbredir": .usbredir(address)
            default: .listen(address)
            }
        } else { return decoded }
        decoded.endpoint = Endpoint(name: name, kind: kind, password: password, allowedPeers: allowedPeers,
                                    location: entry.keyLocation)
        return decoded
    }

    /// `allow:` (listen only): the peer addresses a listen endpoint accepts.
    /// A listen endpoint on a non-loopback address without it is a warning:
    /// anyone who reaches the port gets the device.
    private mutating func decodeAllow(_ field: Field?, kind: Field, address: HostPort?) -> [String]? {
        guard let field else {
            if kind.name == "listen", let address, !Platform.isLoopback(address.host) {
                warning("listen on \(address.host) accepts any peer that can reach it", at: kind.valueLocation,
                        hint: "add allow: [ADDRESS, ...] or listen on 127.0.0.1")
            }
            return []
        }
        guard kind.name == "listen" else {
            error("allow applies to listen endpoints only", at: field.entryLocation)
            return nil
        }
        guard let items = sequence(field, "allow", hint: "a list of peer IP addresses, e.g. [192.0.2.10]") else { return nil }
        var peers: [String] = []
        for item in items {
            let itemField = Field(name: "allow", item: item)
            guard let text = string(itemField) else { return nil }
            guard Platform.isIPAddress(text) else {
                error("allow entries are IP addresses, found '\(text)'", at: itemField.valueLocation,
                      hint: "for example 192.0.2.10 or ::1")
                return nil
            }
            peers.append(text)
        }
        return peers
    }

    /// `libvirt: NAME`: a domain name as virsh shows it.
    private mutating func libvirtDomain(_ field: Field) -> String? {
        guard let text = string(field) else { return nil }
        guard !text.isEmpty, !text.contains(where: { $0.isWhitespace || $0 == "/" }) else {
            error("libvirt must be a domain name, found '\(text)'", at: field.valueLocation,
                  hint: "the name virsh list --all shows, e.g. lab-vm-a")
            return nil
        }
        return text
    }

    /// `uri:` (libvirt only), default qemu:///system.
    private mutating func libvirtURI(_ field: Field?, kindName: String) -> String? {
        guard let field else { return Endpoint.defaultLibvirtURI }
        guard kindName == "libvirt" else {
            error("uri applies to libvirt endpoints only", at: field.entryLocation)
            return nil
        }
        guard let text = string(field) else { return nil }
        guard text.contains(":/"), !text.contains(where: \.isWhitespace) else {
            error("uri must be a libvirt connection URI, found '\(text)'", at: field.valueLocation,
                  hint: "for example qemu:///system or qemu+ssh://host/system")
            return nil
        }
        return text
    }

    /// The path of `unix:PATH` as written, when the value is written so.
    private static func unixSocketText(_ field: Field) -> String? {
        guard case .scalar(let text, _) = field.node.content, text.hasPrefix("unix:") else { return nil }
        return String(text.dropFirst("unix:".count))
    }

    /// `spice: unix:PATH`: the socket QEMU serves SPICE on. It may not exist
    /// yet (the VM is not running), so only a path that cannot be a socket
    /// is an error. Only plain spice: QEMU has no TLS on its unix socket,
    /// and raw usbredir here is TCP.
    private mutating func socketPath(_ text: String, _ field: Field) -> String? {
        guard field.name == "spice" else {
            error("\(field.name) takes host:port; only spice accepts unix:PATH", at: field.valueLocation,
                  hint: field.name == "spice-tls" ? "QEMU serves its unix socket without TLS: use spice: unix:PATH" : nil)
            return nil
        }
        guard !text.isEmpty else {
            error("unix: needs a socket path", at: field.valueLocation, hint: "for example unix:/run/vm1/spice.sock")
            return nil
        }
        let path = Paths.resolve(text, from: directory)
        guard path.utf8.count <= Self.maxSocketPathBytes else {
            error("socket path is longer than \(Self.maxSocketPathBytes) bytes: \(path)", at: field.valueLocation)
            return nil
        }
        if checkFiles, [Platform.FileKind.regular, .directory].contains(Platform.fileKind(path)) {
            error("not a socket: \(path)", at: field.valueLocation)
            return nil
        }
        return path
    }

    /// sun_path holds 108 bytes with its terminating NUL (Linux).
    static let maxSocketPathBytes = 107

    private mutating func hostPort(_ field: Field) -> HostPort? {
        // A plain [::1]:5930 is a YAML flow list; only quoting keeps it text.
        if case .sequence = field.node.content {
            error("\(field.name) must be host:port, found a list", at: field.valueLocation,
                  hint: "quote IPv6 addresses: \"[::1]:5930\"")
            return nil
        }
        guard let text = string(field) else { return nil }
        switch HostPort.parse(text) {
        case .success(let address):
            return address
        case .failure(.bareIPv6):
            error("\(field.name) must be host:port, found '\(text)'", at: field.valueLocation,
                  hint: "write IPv6 addresses in brackets: \"[::1]:5930\"")
        case .failure(.portOutOfRange(let port)):
            error("port \(port) is out of range 1...65535", at: field.valueLocation)
        case .failure(.malformed):
            error("\(field.name) must be host:port, found '\(text)'", at: field.valueLocation,
                  hint: "for example 127.0.0.1:\(field.name == "metrics" ? 9477 : 5930)")
        }
        return nil
    }

    // MARK: devices

    private mutating func decodeDevices(_ field: Field, hostSection: String?) -> [DecodedDevice] {
        guard let items = sequence(field, "devices", hint: "start each device with '- '") else { return [] }
        return items.compactMap { decodeDevice($0, hostSection: hostSection) }
    }

    private mutating func decodeDevice(_ item: YAMLNode, hostSection: String?) -> DecodedDevice? {
        guard let fields = mapping(Field(name: "device entry", item: item), "a device entry", keys: Keys.device,
                                   emptyAllowed: false) else { return nil }
        var device = DecodedDevice(location: item.location, hostSection: hostSection,
                                   nameLocation: item.location, toLocation: item.location)
        if let field = fields["name"] {
            device.name = string(field)
            device.nameLocation = field.valueLocation
        } else {
            error("a device entry needs a name", at: item.location)
        }
        let label = device.name.map { "device '\($0)'" } ?? "a device entry"
        if let field = fields["to"] {
            device.endpoint = string(field)
            device.toLocation = field.valueLocation
        } else {
            error("\(label) needs 'to' (the endpoint it goes to)", at: item.location)
        }
        if let field = fields["log"] {
            device.log = choice(field, "log level")
            device.isValid = device.isValid && device.log != nil
        }
        if let field = fields["channel"] {
            device.channelKeyLocation = field.entryLocation
            device.channelValueLocation = field.valueLocation
            device.channel = integer(field, in: 0...255, rangeText: "0...255").map(UInt8.init)
            device.isValid = device.isValid && device.channel != nil
        }
        if let field = fields["take-from-host"] {
            if fields["match"] == nil {
                error("\(label): take-from-host is for matched physical devices (a virtual device is not the host's)",
                      at: field.entryLocation)
                device.isValid = false
            } else if let take = bool(field) {
                device.takeFromHost = take
            } else {
                device.isValid = false
            }
        }
        switch (fields["match"], fields["virtual"]) {
        case (.some, .some):
            error("\(label) has both match and virtual; give one", at: item.location)
        case (nil, nil):
            error("\(label) needs match or virtual", at: item.location)
        case (let field?, nil):
            device.matchKeyLocation = field.entryLocation
            device.source = decodeMatch(field).map(Assignment.Source.match)
        case (nil, let field?):
            device.source = decodeVirtual(field).map(Assignment.Source.virtual)
            if case .mapping(let entries) = field.node.content, let image = entries.first(where: { $0.key == "image" }),
               case .scalar(let text, _) = image.value.content {
                device.imageValue = (text, Field(image).valueLocation)
            }
        }
        return device
    }

    private mutating func decodeMatch(_ field: Field) -> MatchRule? {
        guard let fields = mapping(field, "match", keys: Keys.match) else { return nil }
        guard !fields.entries.isEmpty else {
            error("match needs at least one of vendor, product, serial, port", at: field.entryLocation)
            return nil
        }
        var rule = MatchRule()
        var valid = true
        if let field = fields["vendor"] { rule.vendors = ids(field); valid = valid && rule.vendors != nil }
        if let field = fields["product"] { rule.products = ids(field); valid = valid && rule.products != nil }
        if let field = fields["serial"] { rule.serial = string(field); valid = valid && rule.serial != nil }
        if let field = fields["port"] {
            // Unquoted 1-3 is still text to us: only the raw text matters.
            if let text = string(field) {
                if MatchRule.isPortPath(text) { rule.port = text } else {
                    error("port must be a bus-port path such as 1-3.2, found '\(text)'", at: field.valueLocation)
                }
            }
            valid = valid && rule.port != nil
        }
        return valid ? rule : nil
    }

    /// A 16-bit USB id, or a non-empty list of them.
    private mutating func ids(_ field: Field) -> [UInt16]? {
        let range = 0...0xFFFF, text = "(16-bit: 0x0000...0xffff)"
        guard case .sequence(let items) = field.node.content else {
            return integer(field, in: range, rangeText: text).map { [UInt16($0)] }
        }
        guard !items.isEmpty else {
            error("\(field.name) list is empty", at: field.valueLocation)
            return nil
        }
        let values = items.map { integer(Field(name: field.name, item: $0), in: range, rangeText: text) }
        guard values.allSatisfy({ $0 != nil }) else { return nil }
        // Repeats are dropped (order kept) so equal rules compare equal.
        var seen = Set<UInt16>()
        return values.map { UInt16($0!) }.filter { seen.insert($0).inserted }
    }

    private mutating func decodeVirtual(_ field: Field) -> VirtualDevice? {
        guard let fields = mapping(field, "virtual", keys: Keys.virtual, emptyAllowed: true) else { return nil }
        guard let kindField = fields["kind"] else {
            error("virtual needs 'kind' (mass-storage or source-sink)", at: field.entryLocation)
            return nil
        }
        guard let kind: VirtualDevice.Kind = choice(kindField, "virtual device kind") else { return nil }
        var device = VirtualDevice(kind: kind)
        var valid = true
        if kind == .sourceSink {
            for key in ["image", "read-only", "speed", "uas"] {
                if let extra = fields[key] {
                    error("\(key) applies to mass-storage devices only", at: extra.entryLocation)
                    valid = false
                }
            }
            return valid ? device : nil
        }
        if let image = fields["image"] {
            device.image = filePath(image, "image file")
            valid = valid && device.image != nil
        } else {
            error("a mass-storage device needs 'image' (a disk image file)", at: field.entryLocation)
            valid = false
        }
        if let readOnly = fields["read-only"] {
            if let value = bool(readOnly) { device.readOnly = value } else { valid = false }
        }
        if let speed = fields["speed"] {
            if let value: VirtualDevice.Speed = choice(speed, "stick speed") { device.speed = value } else { valid = false }
        }
        if let uas = fields["uas"] {
            if let value = bool(uas) { device.uas = value } else { valid = false }
            if device.uas && device.speed != .super {
                error("uas needs speed: super (UAS queues commands on bulk streams, which only SuperSpeed has)",
                      at: uas.entryLocation)
                valid = false
            }
        }
        // A writable stick needs a writable image; say so now, not at apply time.
        if valid, checkFiles, !device.readOnly, let path = device.image, let imageField = fields["image"],
           !Platform.isWritable(path) {
            error("image file is not writable: \(path)", at: imageField.valueLocation,
                  hint: "fix its permissions, or set read-only: true")
            valid = false
        }
        return valid ? device : nil
    }

    /// `a`, `a and b`, `a, b and c`.
    static func list(_ words: [String]) -> String {
        words.count <= 1 ? words.joined() : words.dropLast().joined(separator: ", ") + " and " + words.last!
    }
}
