import NIOConcurrencyHelpers
import NIOPosix

/// The process's libvirt client: one connection per URI, reopened when it
/// died, and the lifecycle events of each URI's domains. Calls run on
/// NIO's thread pool (a libvirt call blocks until the daemon answers).
public final class Libvirt: Sendable {
    public static let shared = Libvirt()

    private struct Entry {
        let sink: EventSink
        var connection: LibvirtConnection?
    }
    private let entries = NIOLockedValueBox<[String: Entry]>([:])

    /// Why libvirt cannot be used on this host ("install libvirt0 to use
    /// libvirt endpoints (...)"), or nil when libvirt.so.0 loads. The first
    /// call loads the library; only profiles with libvirt endpoints ask.
    /// Like every libvirt call, on NIO's thread pool: libvirt keeps
    /// thread-local state, and a Swift concurrency (libdispatch) worker that
    /// exits with it crashes in libdispatch's thread cleanup.
    public static func libraryProblem() async -> String? {
        (try? await NIOThreadPool.singleton.runIfActive { LibvirtLibrary.availability?.description }) ?? nil
    }

    /// The domain as libvirt sees it now.
    public func resolve(domain: String, uri: String) async throws -> ResolvedDomain {
        try await NIOThreadPool.singleton.runIfActive { [self] in
            try connection(uri).resolve(domain)
        }
    }

    /// Lifecycle events of every domain of `uri`, for as long as the stream
    /// is iterated. The connection opens now if it can; if it cannot (no
    /// daemon yet), the events start with the first successful resolve.
    public func events(uri: String) -> AsyncStream<DomainEvent> {
        let stream = sink(uri).subscribe()
        Task { _ = try? await NIOThreadPool.singleton.runIfActive { [self] in try connection(uri) } }
        return stream
    }

    private func sink(_ uri: String) -> EventSink {
        entries.withLockedValue { entries in
            if let entry = entries[uri] { return entry.sink }
            let sink = EventSink(uri: uri)
            entries[uri] = Entry(sink: sink)
            return sink
        }
    }

    /// The open connection to `uri`, opening (or reopening) it. Blocking.
    private func connection(_ uri: String) throws -> LibvirtConnection {
        let sink = sink(uri)
        if let open = entries.withLockedValue({ $0[uri]?.connection }), open.isAlive { return open }
        let fresh = try LibvirtConnection(uri: uri, sink: sink)
        entries.withLockedValue { $0[uri]?.connection = fresh }
        return fresh
    }
}

/// Where one URI's lifecycle events go: every current subscriber.
final class EventSink: Sendable {
    let uri: String
    private let subscribers = NIOLockedValueBox<(next: Int, all: [Int: AsyncStream<DomainEvent>.Continuation])>((0, [:]))

    init(uri: String) { self.uri = uri }

    func subscribe() -> AsyncStream<DomainEvent> {
        let (stream, continuation) = AsyncStream<DomainEvent>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let id = subscribers.withLockedValue { s in
            defer { s.next += 1 }
            s.all[s.next] = continuation
            return s.next
        }
        continuation.onTermination = { [weak self] _ in self?.subscribers.withLockedValue { _ = $0.all.removeValue(forKey: id) } }
        return stream
    }

    func deliver(domain: String, kind: Int32) {
        let event = DomainEvent(uri: uri, domain: domain, kind: kind)
        for c in subscribers.withLockedValue({ Array($0.all.values) }) { c.yield(event) }
    }
}
