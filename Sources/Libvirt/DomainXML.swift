import Common
import Transport

/// How to reach a domain's SPICE server, from its XML with secure info
/// (VIR_DOMAIN_XML_SECURE: the password is in it).
public struct SpiceGraphics: Sendable, Equatable {
    /// nil while no port is allocated (autoport, domain not running).
    public var server: SpiceServerAddress?
    /// Only a TLS port is open (`defaultMode='secure'`, no plain port).
    public var tlsOnly: Bool
    /// Empty when the domain sets none.
    public var password: String
}

/// The parts of a domain's XML this tool reads.
struct DomainXML: Equatable {
    var graphics: SpiceGraphics?
    /// `<redirdev bus='usb' type='spicevmc'/>` count: the usbredir channels.
    var usbredirChannels: Int

    /// `uriHost`: the host of a remote connection URI, where a domain
    /// listening on every address is reached.
    init(_ xml: String, uriHost: String?) throws {
        let elements = try XMLScan.elements(xml)
        usbredirChannels = elements.filter {
            $0.path == ["domain", "devices", "redirdev"] && $0.attributes["type"] == "spicevmc"
        }.count
        // The first SPICE graphics element, and its first <listen> child.
        let graphicsPath = ["domain", "devices", "graphics"]
        guard let index = elements.firstIndex(where: { $0.path == graphicsPath && $0.attributes["type"] == "spice" }) else {
            graphics = nil
            return
        }
        let listen = elements[(index + 1)...].prefix { $0.path.starts(with: graphicsPath) && $0.path.count > 3 }
            .first { $0.path == graphicsPath + ["listen"] }
        graphics = Self.graphics(elements[index].attributes, listen: listen?.attributes, uriHost: uriHost)
    }

    private static func graphics(_ element: [String: String], listen: [String: String]?, uriHost: String?) -> SpiceGraphics {
        let password = element["passwd"] ?? ""
        if listen?["type"] == "socket", let path = listen?["socket"] {
            return SpiceGraphics(server: .unix(path), tlsOnly: false, password: password)
        }
        let written = listen?["address"] ?? element["listen"]
        let host = reachableHost(written, uriHost: uriHost)
        let port = Int(element["port"] ?? "") ?? -1
        let tlsPort = Int(element["tlsPort"] ?? "") ?? -1
        if HostPort.ports.contains(port) {
            return SpiceGraphics(server: .tcp(HostPort(host: host, port: port)), tlsOnly: false, password: password)
        }
        if HostPort.ports.contains(tlsPort) {
            return SpiceGraphics(server: .tcp(HostPort(host: host, port: tlsPort)), tlsOnly: true, password: password)
        }
        return SpiceGraphics(server: nil, tlsOnly: false, password: password)
    }

    /// A wildcard listen address is reached at the URI's host, or on
    /// loopback for a local URI; libvirt's default listen is 127.0.0.1.
    static func reachableHost(_ address: String?, uriHost: String?) -> String {
        switch address {
        case nil, "": return uriHost ?? "127.0.0.1"
        case "0.0.0.0": return uriHost ?? "127.0.0.1"
        case "::": return uriHost ?? "::1"
        case let a?: return a
        }
    }
}
