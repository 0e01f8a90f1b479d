#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Serves `status` requests: one line in, one JSON document out. `start`
/// binds; `run` (a swift-service-lifecycle service) serves until the
/// group's graceful shutdown, then removes the socket.
final class StatusServer: Service, Sendable {
    private let channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    private let report: @Sendable () async -> StatusReport
    let path: String

    private init(channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>, path: String,
                 report: @escaping @Sendable () async -> StatusReport) {
        self.channel = channel
        self.path = path
        self.report = report
    }

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await serve(report)
        } onGracefulShutdown: {
            self.stop()
        }
    }

    /// Binds the socket, owner-only (it tells what runs where). Refuses when
    /// another apply answers there: that one keeps its socket.
    static func start(path: String, report: @escaping @Sendable () async -> StatusReport) async throws -> StatusServer {
        let folder = StatusSocket.folder(of: path)
        if !FileManager.default.fileExists(atPath: folder) {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
        if await StatusClient.query(path) != nil { throw StatusSocketError.inUse(path) }
        unlink(path)   // a socket left by an apply that died
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: path) { child in
                child.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        guard chmod(path, 0o600) == 0 else {
            try? await channel.channel.close()
            throw StatusSocketError.permissions(path, String(cString: strerror(errno)))
        }
        return StatusServer(channel: channel, path: path, report: report)
    }

    private func serve(_ report: @escaping @Sendable () async -> StatusReport) async throws {
        try await channel.executeThenClose { inbound in
            for try await client in inbound {
                Task {
                    // A client that does not ask in time is dropped.
                    let idle = client.channel.eventLoop.scheduleTask(in: StatusSocket.idleTimeout) {
                        client.channel.close(promise: nil)
                    }
                    defer { idle.cancel() }
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

public enum StatusSocketError: Error, CustomStringConvertible {
    case inUse(String)
    case permissions(String, String)

    public var description: String {
        switch self {
        case .inUse(let path):
            "another apply already answers on \(path); stop it first, or give this one its own --socket"
        case .permissions(let path, let why): "cannot make \(path) owner-only: \(why)"
        }
    }
}
