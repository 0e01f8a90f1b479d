import Common
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// A minimal HTTP/1.1 server for Prometheus: GET /metrics answers the page,
/// anything else 404 or 405. One request per connection (then close), and a
/// scraper is bounded like any peer: a few connections at once, a few
/// seconds each, request heads as NIOHTTP1 limits them, bodies ignored.
/// `start` binds; `run` (a swift-service-lifecycle service) serves until
/// the group's graceful shutdown.
final class MetricsServer: Service, Sendable {
    typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>
    private let channel: NIOAsyncChannel<Connection, Never>
    private let open = NIOLockedValueBox(0)
    private let page: @Sendable () async -> [UInt8]
    let address: HostPort

    /// Connections served at once; more are closed at once.
    static let maxConnections = 8
    /// How long one connection may take from accept to answer.
    static let connectionTimeout = TimeAmount.seconds(5)

    private init(channel: NIOAsyncChannel<Connection, Never>, address: HostPort,
                 page: @escaping @Sendable () async -> [UInt8]) {
        self.channel = channel
        self.address = address
        self.page = page
    }

    func run() async throws {
        await withGracefulShutdownHandler {
            await serve(page)
        } onGracefulShutdown: {
            self.stop()
        }
    }

    static func start(_ address: HostPort, page: @escaping @Sendable () async -> [UInt8]) async throws -> MetricsServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: address.host, port: address.port) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    return try Connection(wrappingChannelSynchronously: child)
                }
            }
        return MetricsServer(channel: channel, address: address, page: page)
    }

    private func serve(_ page: @escaping @Sendable () async -> [UInt8]) async {
        try? await channel.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in inbound {
                    guard admit() else {
                        try? await connection.channel.close()
                        continue
                    }
                    group.addTask {
                        defer { self.leave() }
                        await Self.answer(connection, page)
                    }
                }
            }
        }
    }

    private func admit() -> Bool {
        open.withLockedValue { count in
            guard count < Self.maxConnections else { return false }
            count += 1
            return true
        }
    }

    private func leave() { open.withLockedValue { $0 -= 1 } }

    /// Reads one request (its body, if any, is dropped) and answers it.
    private static func answer(_ connection: Connection, _ page: @escaping @Sendable () async -> [UInt8]) async {
        let deadline = connection.channel.eventLoop.scheduleTask(in: connectionTimeout) {
            connection.channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        try? await connection.executeThenClose { input, output in
            var head: HTTPRequestHead?
            for try await part in input {
                switch part {
                case .head(let h): head = h
                case .body: continue
                case .end:
                    guard let head else { return }
                    let (status, body) = await response(to: head, page)
                    try await write(status, body: body, head: head, to: output)
                    return
                }
            }
        }
    }

    static func response(to head: HTTPRequestHead,
                         _ page: @Sendable () async -> [UInt8]) async -> (HTTPResponseStatus, [UInt8]) {
        guard head.method == .GET || head.method == .HEAD else { return (.methodNotAllowed, Array("GET only\n".utf8)) }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard path == "/metrics" else { return (.notFound, Array("see /metrics\n".utf8)) }
        return (.ok, await page())
    }

    private static func write(_ status: HTTPResponseStatus, body: [UInt8], head request: HTTPRequestHead,
                              to output: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
        headers.add(name: "Content-Length", value: "\(body.count)")
        headers.add(name: "Connection", value: "close")
        if status == .methodNotAllowed { headers.add(name: "Allow", value: "GET, HEAD") }
        try await output.write(.head(HTTPResponseHead(version: request.version, status: status, headers: headers)))
        if request.method != .HEAD { try await output.write(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
        try await output.write(.end(nil))
    }

    func stop() {
        channel.channel.close(promise: nil)
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
