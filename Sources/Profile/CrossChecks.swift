/// Rules between entries: names, endpoint references, channels, identical
/// match rules. Run once per device list a machine can end up with (the
/// global list, alone or followed by one host section), so a mistake in any
/// host's section is found on every machine.
extension ProfileDecoder {
    mutating func crossCheck(_ devices: [DecodedDevice], endpoints: [DecodedEndpoint]) {
        let byName = Dictionary(endpoints.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var names: [String: DecodedDevice] = [:]
        var channels: [String: [UInt8: DecodedDevice]] = [:]
        var rawUsers: [String: DecodedDevice] = [:]
        var rules: [(DecodedDevice, MatchRule)] = []
        var images: [String: (device: DecodedDevice, readOnly: Bool)] = [:]

        for device in devices {
            if let name = device.name {
                if let first = names[name] {
                    error("duplicate device name '\(name)'", at: device.nameLocation,
                          hint: "first used at line \(first.nameLocation.line), column \(first.nameLocation.column)")
                } else {
                    names[name] = device
                }
            }
            if let target = device.endpoint { checkEndpoint(device, target, byName, &channels, &rawUsers) }
            if case .virtual(let v)? = device.source, let image = v.image, let written = device.imageValue {
                // An image is locked while in use: one writer or any number of
                // readers. A second assignment next to a writer could not open it.
                let key = Platform.canonicalPath(image)
                if let first = images[key], !first.readOnly || !v.readOnly {
                    let firstName = first.device.name ?? "the entry at line \(first.device.location.line)"
                    error(first.readOnly
                          ? "image \(written.text) is already assigned read-only to '\(firstName)' and cannot also be written"
                          : "image \(written.text) is already assigned read-write to '\(firstName)'",
                          at: written.location,
                          hint: "an image can be written by one assignment only (make both read-only, or use a copy)")
                } else if images[key] == nil {
                    images[key] = (device, v.readOnly)
                }
            }
            if case .match(let rule)? = device.source, let matchLocation = device.matchKeyLocation {
                if let (first, _) = rules.first(where: { $0.1.isIdentical(to: rule) }) {
                    let firstName = first.name ?? "the entry at line \(first.location.line)"
                    error("match rule is identical to that of '\(firstName)'", at: matchLocation,
                          hint: "a device would always go to '\(firstName)', the first in file order")
                } else {
                    rules.append((device, rule))
                }
            }
        }
    }

    private mutating func checkEndpoint(_ device: DecodedDevice, _ target: String, _ byName: [String: DecodedEndpoint],
                                        _ channels: inout [String: [UInt8: DecodedDevice]],
                                        _ rawUsers: inout [String: DecodedDevice]) {
        guard let endpoint = byName[target] else {
            let hint: String
            if byName.isEmpty { hint = "no endpoints are defined" } else if let close = Suggestion.closest(
                // File order, so a tie between two names always suggests the same one.
                to: target, in: byName.values.sorted { $0.location < $1.location }.map(\.name)) { hint = "did you mean '\(close)'?" } else {
                hint = "defined endpoints: " + byName.keys.sorted().joined(separator: ", ")
            }
            error("unknown endpoint '\(target)'", at: device.toLocation, hint: hint)
            return
        }
        guard let isSpice = endpoint.isSpice, let kindName = endpoint.kindName else { return }
        if !isSpice {
            if let keyLocation = device.channelKeyLocation {
                error("channel applies to spice endpoints only; '\(target)' is a \(kindName) endpoint",
                      at: keyLocation)
            }
            if let first = rawUsers[target] {
                error("endpoint '\(target)' already carries '\(first.name ?? "another device")'", at: device.toLocation,
                      hint: "a raw usbredir endpoint (usbredir or listen) carries exactly one assignment")
            } else {
                rawUsers[target] = device
            }
        } else if let channel = device.channel, let valueLocation = device.channelValueLocation {
            if let first = channels[target]?[channel] {
                error("channel \(channel) of endpoint '\(target)' is already taken by '\(first.name ?? "another device")'",
                      at: valueLocation)
            } else {
                channels[target, default: [:]][channel] = device
            }
        }
    }
}
