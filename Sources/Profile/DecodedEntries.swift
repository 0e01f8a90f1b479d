/// An endpoint as read, kept even when part of it is wrong so that the
/// cross-checks of devices do not add spurious "unknown endpoint" errors.
struct DecodedEndpoint {
    var name: String
    var location: SourcePosition
    /// spice, spice-tls, usbredir, listen or libvirt; nil when not exactly one was given.
    var kindName: String?
    /// Complete and valid.
    var endpoint: Endpoint?

    var isSpice: Bool? { kindName.map { $0 == "spice" || $0 == "spice-tls" || $0 == "libvirt" } }
}

/// A device entry as read, with the locations the cross-checks point at.
struct DecodedDevice {
    var location: SourcePosition
    var hostSection: String?
    var name: String?
    var nameLocation: SourcePosition
    var endpoint: String?
    var toLocation: SourcePosition
    var log: LogLevel?
    var channel: UInt8?
    var channelKeyLocation: SourcePosition?
    var channelValueLocation: SourcePosition?
    var takeFromHost = false
    var source: Assignment.Source?
    var matchKeyLocation: SourcePosition?
    /// A virtual device's image value as written, and where (cross-checks point there).
    var imageValue: (text: String, location: SourcePosition)?
    var isValid = true

    var assignment: Assignment? {
        guard isValid, let name, let endpoint, let source else { return nil }
        return Assignment(name: name, endpoint: endpoint, log: log, channel: channel, source: source,
                          takeFromHost: takeFromHost, location: location, hostSection: hostSection)
    }
}

import Common

struct DecodedDocument {
    var version: Int?
    var log: LogLevel = .info
    var metrics: HostPort?
    var endpoints: [DecodedEndpoint] = []
    var devices: [DecodedDevice] = []
    var hosts: [(name: String, devices: [DecodedDevice])] = []
}
