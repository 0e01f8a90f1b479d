import Common
import Testing
import Transport
@testable import Libvirt

/// The parts of a live domain's XML (as `virsh dumpxml --security-info`
/// printed them for libvirt 9.0 here) that say how to reach it.
@Suite struct DomainXMLTests {
    static func domain(_ graphics: String, redirdevs: Int = 2) -> String {
        let redir = String(repeating: "<redirdev bus='usb' type='spicevmc'><alias name='redir0'/></redirdev>", count: redirdevs)
        return "<domain type='qemu' id='1'><name>d</name><devices><controller type='usb' model='qemu-xhci'/>"
            + graphics + redir + "<redirdev bus='usb' type='tcp'><source mode='connect' host='h' service='1'/></redirdev>"
            + "</devices></domain>"
    }

    @Test func autoportOnLoopbackWithPassword() throws {
        let xml = try DomainXML(Self.domain("""
            <graphics type='spice' port='5900' autoport='yes' listen='127.0.0.1' passwd='pw1'>
              <listen type='address' address='127.0.0.1'/></graphics>
            """), uriHost: nil)
        #expect(xml.graphics == SpiceGraphics(server: .tcp(HostPort(host: "127.0.0.1", port: 5900)), tlsOnly: false, password: "pw1"))
        #expect(xml.usbredirChannels == 2)
    }

    @Test func aUnixSocketListen() throws {
        let xml = try DomainXML(Self.domain("<graphics type='spice' passwd='p'><listen type='socket' socket='/run/s.sock'/></graphics>",
                                            redirdevs: 1), uriHost: nil)
        #expect(xml.graphics?.server == .unix("/run/s.sock"))
        #expect(xml.usbredirChannels == 1)
    }

    @Test func notRunningTLSOnlyAndWildcards() throws {
        let down = try DomainXML(Self.domain("<graphics type='spice' port='-1' autoport='yes'/>"), uriHost: nil)
        #expect(down.graphics == SpiceGraphics(server: nil, tlsOnly: false, password: ""))
        let tls = try DomainXML(Self.domain("<graphics type='spice' tlsPort='5901' listen='0.0.0.0'/>"), uriHost: "lab1")
        #expect(tls.graphics == SpiceGraphics(server: .tcp(HostPort(host: "lab1", port: 5901)), tlsOnly: true, password: ""))
        let none = try DomainXML("<domain><devices><graphics type='vnc' port='5900'/></devices></domain>", uriHost: nil)
        #expect(none.graphics == nil && none.usbredirChannels == 0)
        #expect(LibvirtConnection.host(of: "qemu+ssh://root@lab1/system") == "lab1")
        #expect(LibvirtConnection.host(of: "qemu:///system") == nil)
    }

    /// The XML reader is our own (XMLScan, not libxml2): escaped passwords,
    /// comments, CDATA, a doctype and nested elements of the same name.
    @Test func escapesCommentsAndNestingAreRead() throws {
        let xml = """
            <?xml version="1.0"?><!DOCTYPE domain><domain type='kvm'><!-- <graphics type='spice' port='1'/> -->
            <devices><graphics type='vnc' port='5901'/><description><![CDATA[ <graphics type='spice'/> ]]></description>
            <graphics type="spice" port="5930" passwd="a&amp;b&lt;&#39;c&#x41;"><listen type="address" address="10.0.0.2"/>
            <image compression='off'/></graphics><redirdev bus='usb' type='spicevmc'/><hub><redirdev type='spicevmc'/></hub>
            </devices></domain>
            """
        let parsed = try DomainXML(xml, uriHost: nil)
        #expect(parsed.graphics == SpiceGraphics(server: .tcp(HostPort(host: "10.0.0.2", port: 5930)), tlsOnly: false,
                                                 password: "a&b<'cA"))
        #expect(parsed.usbredirChannels == 1, "only /domain/devices/redirdev counts")
        #expect(throws: XMLScanError.self) { try DomainXML("<domain><devices></domain>", uriHost: nil) }
        #expect(throws: XMLScanError.self) { try DomainXML("<domain><graphics type='spice", uriHost: nil) }
    }
}
