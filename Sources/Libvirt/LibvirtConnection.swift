import Common
#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
#if canImport(FoundationEssentials)
import FoundationEssentials   // URL; not Foundation: no ICU in the binary
#else
import Foundation
#endif

/// libvirt's own event loop (virEventRegisterDefaultImpl, then a thread
/// running virEventRunDefaultImpl): lifecycle events and keepalives need it,
/// and it must be registered before the first connection opens.
enum LibvirtEventLoop {
    nonisolated(unsafe) private static var running = false
    private static let lock = NIOLock()

    static func start(_ api: LibvirtLibrary) {
        lock.withLock {
            guard !running else { return }
            running = true
            // libvirt prints every error on stderr unless an error function
            // is set; errors are read from virGetLastErrorMessage() instead.
            api.setErrorFunc(nil, { _, _ in })
            _ = api.eventRegisterDefaultImpl()
            DetachedThread.start(name: "libvirt-events") { while true { _ = api.eventRunDefaultImpl() } }
        }
    }
}

/// One open connection to a libvirt URI, with the lifecycle events of
/// every domain delivered to `sink`. libvirt connections may be used from
/// any thread.
final class LibvirtConnection: @unchecked Sendable {
    let uri: String
    private let api: LibvirtLibrary
    private let pointer: LibvirtLibrary.ConnectPtr
    private var callbackID: Int32 = -1
    /// Keepalive: a daemon that stops answering for 5 s x 3 closes the connection.
    static let keepaliveSeconds: Int32 = 5, keepaliveCount: UInt32 = 3

    init(uri: String, sink: EventSink) throws(LibvirtError) {
        // The first libvirt endpoint loads the library (LibvirtLibrary).
        let api = try LibvirtLibrary.load()
        LibvirtEventLoop.start(api)
        guard let pointer = api.connectOpen(uri) else { throw .unreachable(uri: uri, api.lastMessage) }
        self.uri = uri
        self.api = api
        self.pointer = pointer
        _ = api.connectSetKeepAlive(pointer, Self.keepaliveSeconds, Self.keepaliveCount)
        // The sink outlives the connection (Libvirt keeps it per URI), so an
        // unretained pointer is safe; the callback is deregistered in deinit.
        callbackID = api.registerLifecycle(pointer, lifecycleEvent, Unmanaged.passUnretained(sink).toOpaque())
    }

    deinit {
        if callbackID >= 0 { _ = api.connectDomainEventDeregisterAny(pointer, callbackID) }
        _ = api.connectClose(pointer)
    }

    var isAlive: Bool { api.connectIsAlive(pointer) == 1 }
    var hasEvents: Bool { callbackID >= 0 }

    /// The domain's state, SPICE graphics and usbredir channels; a domain
    /// that does not exist is `.missing`, not an error.
    func resolve(_ name: String) throws(LibvirtError) -> ResolvedDomain {
        var result = ResolvedDomain(name: name, uri: uri, state: .missing, graphics: nil, usbredirChannels: 0)
        guard let domain = api.domainLookupByName(pointer, name) else {
            if api.getLastErrorCode() == LibvirtLibrary.errNoDomain { return result }
            throw .failed(api.lastMessage)
        }
        defer { _ = api.domainFree(domain) }
        var state: Int32 = 0, reason: Int32 = 0
        guard api.domainGetState(domain, &state, &reason, 0) == 0 else { throw .failed(api.lastMessage) }
        result.state = DomainState(state)
        guard let text = api.domainGetXMLDesc(domain, LibvirtLibrary.domainXMLSecure) else {
            throw .failed(api.lastMessage)
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
}

/// Called on the libvirt event thread (so the library is loaded).
private func lifecycleEvent(_ connection: OpaquePointer?, _ domain: OpaquePointer?, _ event: Int32, _ detail: Int32,
                            _ opaque: UnsafeMutableRawPointer?) {
    guard let domain, let opaque, let api = try? LibvirtLibrary.load(), let name = api.domainGetName(domain) else {
        return
    }
    Unmanaged<EventSink>.fromOpaque(opaque).takeUnretainedValue().deliver(domain: String(cString: name), kind: event)
}
