import Foundation
import NIOCore
import NIOPosix
import Reconciler

/// Where running applies listen for `status`: $XDG_RUNTIME_DIR when set,
/// else /run/usbredir (design.md).
enum StatusSocket {
    static var directory: String {
        if let dir = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], !dir.isEmpty { return dir }
        return "/run/usbredir"
    }

    static func path(forProfile name: String) -> String { "\(directory)/usbredir-\(name).sock" }

    /// Every status socket in the directory.
    static func all() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix("usbredir-") && $0.hasSuffix(".sock") }.sorted().map { "\(directory)/\($0)" }
    }

    /// Largest request line we read; the protocol has one word.
    static let maxRequest = 64
    /// Largest answer a client accepts.
    static let maxReply = 16 * 1024 * 1024
}

/// Serves `status` requests: one line in, one JSON document out.
final class StatusServer: Sendable {
    private let channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    let path: String

    private init(channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>, path: String) {
        self.channel = channel
        self.path = path
    }

    static func start(path: String, report: @escaping @Sendable () async -> StatusReport) async throws -> StatusServer {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        unlink(path)   // a socket left by an apply that died
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: path) { child in
                child.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        let server = StatusServer(channel: channel, path: path)
        Task { try? await server.serve(report) }
        return server
    }

    private func serve(_ report: @escaping @Sendable () async -> StatusReport) async throws {
        try await channel.executeThenClose { inbound in
            for try await client in inbound {
                Task {
                    try? await client.executeThenClose { input, output in
                        var request = ByteBuffer()
                        for try await var chunk in input {
                            request.writeBuffer(&chunk)
                            if request.readableBytesView.contains(UInt8(ascii: "\n"))
                                || request.readableBytes > StatusSocket.maxRequest { break }
                        }
                        let word = String(buffer: request).trimmingCharacters(in: .whitespacesAndNewlines)
                        let body: Data
                        if word == "status" {
                            body = (try? JSONEncoder.status.encode(await report())) ?? Data("{}".utf8)
                        } else {
                            body = Data("{\"error\":\"unknown request\"}".utf8)
                        }
                        try await output.write(ByteBuffer(bytes: body + Data("\n".utf8)))
                    }
                }
            }
        }
    }

    func stop() {
        channel.channel.close(promise: nil)
        unlink(path)
    }
}

enum StatusClient {
    /// Asks one running apply; nil when nothing answers there.
    static func query(_ path: String) async -> StatusReport? {
        do {
            let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(2))
                .connect(unixDomainSocketPath: path) { ch in
                    ch.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch) }
                }
            let data: Data = try await client.executeThenClose { input, output in
                try await output.write(ByteBuffer(string: "status\n"))
                var reply = ByteBuffer()
                for try await var chunk in input {
                    reply.writeBuffer(&chunk)
                    if reply.readableBytes > StatusSocket.maxReply { break }
                }
                return Data(reply.readableBytesView)
            }
            return try JSONDecoder().decode(StatusReport.self, from: data)
        } catch {
            return nil
        }
    }
}

extension JSONEncoder {
    static var status: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}
