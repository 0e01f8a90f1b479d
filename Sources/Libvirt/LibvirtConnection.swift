import CLibvirt
import Foundation

/// libvirt's own event loop (virEventRegisterDefaultImpl, then a thread
/// running virEventRunDefaultImpl): lifecycle events and keepalives need it,
/// and it must be registered before the first connection opens.
enum LibvirtEventLoop {
    nonisolated(unsafe) private static var running = false
    private static let lock = NSLock()

    static func start() {
        lock.withLock {
            guard !running else { return }
            running = true
            usbredir_libvirt_silence()
            virEventRegisterDefaultImpl()
            let thread = Thread { while true { _ = virEventRunDefaultImpl() } }
            thread.name = "libvirt-events"
            thread.start()
        }
    }
}

/// One open connection to a libvirt URI, with the lifecycle events of
/// every domain delivered to `sink`. libvirt connections may be used from
/// any thread.
final class LibvirtConnection: @unchecked Sendable {
    let uri: String
    private let pointer: virConnectPtr
    private var callbackID: Int32 = -1
    /// Keepalive: a daemon that stops answering for 5 s x 3 closes the connection.
    static let keepaliveSeconds: Int32 = 5, keepaliveCount: UInt32 = 3

    init(uri: String, sink: EventSink) throws(LibvirtError) {
        LibvirtEventLoop.start()
        guard let pointer = virConnectOpen(uri) else { throw .unreachable(uri: uri, Self.lastMessage) }
        self.uri = uri
        self.pointer = pointer
        _ = virConnectSetKeepAlive(pointer, Self.keepaliveSeconds, Self.keepaliveCount)
        // The sink outlives the connection (Libvirt keeps it per URI), so an
        // unretained pointer is safe; the callback is deregistered in deinit.
        callbackID = usbredir_register_lifecycle(pointer, lifecycleEvent, Unmanaged.passUnretained(sink).toOpaque())
    }

    deinit {
        if callbackID >= 0 { _ = virConnectDomainEventDeregisterAny(pointer, callbackID) }
        _ = virConnectClose(pointer)
    }

    var isAlive: Bool { virConnectIsAlive(pointer) == 1 }
    var hasEvents: Bool { callbackID >= 0 }

    /// The domain's state, SPICE graphics and usbredir channels; a domain
    /// that does not exist is `.missing`, not an error.
    func resolve(_ name: String) throws(LibvirtError) -> ResolvedDomain {
        var result = ResolvedDomain(name: name, uri: uri, state: .missing, graphics: nil, usbredirChannels: 0)
        guard let domain = virDomainLookupByName(pointer, name) else {
            if virGetLastErrorCode() == Int32(VIR_ERR_NO_DOMAIN.rawValue) { return result }
            throw .failed(Self.lastMessage)
        }
        defer { virDomainFree(domain) }
        var state: Int32 = 0, reason: Int32 = 0
        guard virDomainGetState(domain, &state, &reason, 0) == 0 else { throw .failed(Self.lastMessage) }
        result.state = DomainState(state)
        guard let text = virDomainGetXMLDesc(domain, UInt32(VIR_DOMAIN_XML_SECURE.rawValue)) else {
            throw .failed(Self.lastMessage)
        }
        defer { free(text) }
        do {
            let xml = try DomainXML(String(cString: text), uriHost: Self.host(of: uri))
            result.graphics = xml.graphics
            result.usbredirChannels = xml.usbredirChannels
        } catch {
            throw .failed("cannot read the XML of domain \(name): \(error)")
        }
        return result
    }

    /// The host of a remote URI (qemu+ssh://lab1/system), nil for a local one.
    static func host(of uri: String) -> String? {
        guard let host = URL(string: uri)?.host, !host.isEmpty else { return nil }
        return host
    }

    static var lastMessage: String { String(cString: virGetLastErrorMessage()) }
}

/// Called on the libvirt event thread.
private func lifecycleEvent(_ connection: virConnectPtr?, _ domain: virDomainPtr?, _ event: Int32, _ detail: Int32,
                            _ opaque: UnsafeMutableRawPointer?) {
    guard let domain, let opaque, let name = virDomainGetName(domain) else { return }
    Unmanaged<EventSink>.fromOpaque(opaque).takeUnretainedValue().deliver(domain: String(cString: name), kind: event)
}
