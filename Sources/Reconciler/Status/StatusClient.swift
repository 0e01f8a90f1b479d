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

/// Asks a running apply for its status over its unix socket.
public enum StatusClient {
    /// Asks one running apply; nil when nothing answers there.
    public static func query(_ path: String) async -> StatusReport? {
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
