import Foundation
import NIOCore
import NIOPosix

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
                            body = (try? JSONEncoder.sortedKeys.encode(await report())) ?? Data("{}".utf8)
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
