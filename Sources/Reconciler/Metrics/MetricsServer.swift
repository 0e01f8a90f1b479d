import Common
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// A minimal HTTP/1.1 server for /metrics and the status page (`HTTPRoutes`
/// decides the answers). One request per connection, then close.
///
/// It must keep answering a scrape or a browser while anyone who can reach
/// the port misbehaves, so a connection is cheap until it has sent a whole
/// request head, and those are the ones given up first:
/// - each connection has `headDeadline` from accept to a complete head (a
///   real client needs milliseconds), and `connectionTimeout` in all;
/// - at most `maxConnections` are open; at the cap a new connection is
///   still taken, and the oldest one that has not sent its head is closed
///   to make room. A connection that sent its head (a real client) is never
///   evicted; only when every open one has, is the newcomer refused.
/// So 300 connections that send half a request line and wait cost a scrape
/// nothing: it is accepted at once and answered in its own turn.
/// `start` binds; `run` (a swift-service-lifecycle service) serves until
/// the group's graceful shutdown.
final class MetricsServer: Service, Sendable {
    typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>
    private let channel: NIOAsyncChannel<Connection, Never>
    private let registry = ConnectionRegistry()
    private let routes: @Sendable (HTTPRequestHead) async -> HTTPReply
    let address: HostPort

    /// Connections open at once (the excess evicts those without a head).
    static let maxConnections = 64
    /// From accept to a complete request head.
    static let headDeadline = TimeAmount.milliseconds(2000)
    /// From accept to the end of the answer (a client that reads slowly).
    static let connectionTimeout = TimeAmount.seconds(5)
    /// Pending connections the kernel keeps for accept: room for a burst.
    static let backlog: Int32 = 1024

    private init(channel: NIOAsyncChannel<Connection, Never>, address: HostPort,
                 routes: @escaping @Sendable (HTTPRequestHead) async -> HTTPReply) {
        self.channel = channel
        self.address = address
        self.routes = routes
    }

    func run() async throws {
        await withGracefulShutdownHandler {
            await serve()
        } onGracefulShutdown: {
            self.stop()
        }
    }

    static func start(_ address: HostPort,
                      routes: @escaping @Sendable (HTTPRequestHead) async -> HTTPReply) async throws -> MetricsServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: backlog)
            .bind(host: address.host, port: address.port) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    return try Connection(wrappingChannelSynchronously: child)
                }
            }
        return MetricsServer(channel: channel, address: address, routes: routes)
    }

    private func serve() async {
        let (registry, routes) = (self.registry, self.routes)
        try? await channel.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in inbound {
                    guard let id = registry.admit(connection.channel) else {
                        try? await connection.channel.close()
                        continue
                    }
                    group.addTask {
                        defer { registry.leave(id) }
                        await Self.answer(connection, id: id, registry: registry, routes)
                    }
                }
            }
        }
    }

    /// Reads one request (its body, if any, is dropped) and answers it.
    private static func answer(_ connection: Connection, id: UInt64, registry: ConnectionRegistry,
                               _ routes: @Sendable (HTTPRequestHead) async -> HTTPReply) async {
        let loop = connection.channel.eventLoop
        let close: @Sendable () -> Void = { connection.channel.close(promise: nil) }
        let headLate = loop.scheduleTask(in: headDeadline, close)
        let overall = loop.scheduleTask(in: connectionTimeout, close)
        defer {
            headLate.cancel()
            overall.cancel()
        }
        try? await connection.executeThenClose { input, output in
            var head: HTTPRequestHead?
            for try await part in input {
                switch part {
                case .head(let h):
                    head = h
                    headLate.cancel()
                    registry.headReceived(id)
                case .body: continue
                case .end:
                    guard let head else { return }
                    try await write(await routes(head), head: head, to: output)
                    return
                }
            }
        }
    }

    private static func write(_ reply: HTTPReply, head request: HTTPRequestHead,
                              to output: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: reply.contentType)
        headers.add(name: "Content-Length", value: "\(reply.body.count)")
        headers.add(name: "Connection", value: "close")
        for (name, value) in reply.headers { headers.add(name: name, value: value) }
        try await output.write(.head(HTTPResponseHead(version: request.version, status: reply.status, headers: headers)))
        if request.method != .HEAD { try await output.write(.body(.byteBuffer(ByteBuffer(bytes: reply.body)))) }
        try await output.write(.end(nil))
    }

    func stop() {
        channel.channel.close(promise: nil)
    }
}

/// The server's open connections, and which of them are still waiting for
/// their request head (the ones a newcomer may evict, oldest first).
final class ConnectionRegistry: Sendable {
    private struct State {
        var next: UInt64 = 0
        var open = 0
        /// Accepted, head not complete yet; ids grow with accept time.
        var waiting: [UInt64: any Channel] = [:]
    }
    private let state = NIOLockedValueBox(State())
    let capacity: Int

    init(capacity: Int = MetricsServer.maxConnections) { self.capacity = capacity }

    /// An id for the new connection, or nil to refuse it (every open
    /// connection is a real client being answered). At the cap, the oldest
    /// connection still without a head is closed for it.
    func admit(_ channel: any Channel) -> UInt64? {
        let (id, evicted): (UInt64?, (any Channel)?) = state.withLockedValue { s in
            var evicted: (any Channel)?
            if s.open >= capacity {
                guard let oldest = s.waiting.keys.min() else { return (nil, nil) }
                evicted = s.waiting.removeValue(forKey: oldest)
            }
            let id = s.next
            s.next += 1
            s.open += 1
            s.waiting[id] = channel
            return (id, evicted)
        }
        evicted?.close(promise: nil)
        return id
    }

    /// The connection sent its whole head: a real client, never evicted.
    func headReceived(_ id: UInt64) { state.withLockedValue { _ = $0.waiting.removeValue(forKey: id) } }

    func leave(_ id: UInt64) {
        state.withLockedValue { s in
            s.waiting.removeValue(forKey: id)
            s.open -= 1
        }
    }

    /// Open connections, and how many of them still wait for a head (tests).
    var counts: (open: Int, waiting: Int) { state.withLockedValue { ($0.open, $0.waiting.count) } }
}

/// One answer: status, type, extra headers, body.
struct HTTPReply: Sendable {
    var status: HTTPResponseStatus
    var contentType: String
    var headers: [(String, String)] = []
    var body: [UInt8]

    static func text(_ status: HTTPResponseStatus, _ text: String, headers: [(String, String)] = []) -> HTTPReply {
        HTTPReply(status: status, contentType: "text/plain; charset=utf-8", headers: headers, body: Array(text.utf8))
    }
}

public enum MetricsServerError: Error, CustomStringConvertible {
    case bind(HostPort, String)

    public var description: String {
        switch self {
        case .bind(let address, let why): "cannot serve metrics on \(address): \(why)"
        }
    }
}
