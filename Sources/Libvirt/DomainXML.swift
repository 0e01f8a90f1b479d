import Common
import FoundationXML
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
        let document = try XMLDocument(xmlString: xml, options: [])
        usbredirChannels = try document.nodes(forXPath: "/domain/devices/redirdev[@type='spicevmc']").count
        let spice = try document.nodes(forXPath: "/domain/devices/graphics[@type='spice']").first as? XMLElement
        graphics = spice.map { Self.graphics($0, uriHost: uriHost) }
    }

    private static func graphics(_ element: XMLElement, uriHost: String?) -> SpiceGraphics {
        let password = element.attribute(forName: "passwd")?.stringValue ?? ""
        let listen = element.elements(forName: "listen").first
        if listen?.attribute(forName: "type")?.stringValue == "socket",
           let path = listen?.attribute(forName: "socket")?.stringValue {
            return SpiceGraphics(server: .unix(path), tlsOnly: false, password: password)
        }
        let written = listen?.attribute(forName: "address")?.stringValue ?? element.attribute(forName: "listen")?.stringValue
        let host = reachableHost(written, uriHost: uriHost)
        let port = Int(element.attribute(forName: "port")?.stringValue ?? "") ?? -1
        let tlsPort = Int(element.attribute(forName: "tlsPort")?.stringValue ?? "") ?? -1
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
