import NIOConcurrencyHelpers
import NIOCore

/// Writes whole packets to a channel from any thread without waiting for
/// them: the caller (a session engine, serialised by its actor) hands a
/// burst of packets over and goes on. A burst is written and flushed in one
/// event-loop task: nothing another writer puts on the channel comes
/// between its parts, bursts go out in the order they were given (the loop
/// runs its tasks in order), a burst is one writev, and one wake-up of the
/// loop at most.
///
/// This replaces a writer task that awaited every write: that task cost
/// two thread wake-ups per burst (the pool thread it ran on, then the loop).
final class OrderedChannelWriter: Sendable {
    private let channel: Channel

    init(channel: Channel) {
        self.channel = channel
    }

    /// Queues `parts` (the buffers of a burst, in order). `written` runs on
    /// the event loop once they are on the socket (true) or the channel
    /// failed or closed (false).
    func write(_ parts: [ByteBuffer], written: @escaping @Sendable (Bool) -> Void) {
        let channel = self.channel
        // A writer on the channel's own loop (the session's) writes now:
        // the loop runs nothing else meanwhile, so the order holds.
        if channel.eventLoop.inEventLoop { return Self.write(parts, to: channel, written) }
        channel.eventLoop.execute { Self.write(parts, to: channel, written) }
    }

    private static func write(_ parts: [ByteBuffer], to channel: Channel, _ written: @escaping @Sendable (Bool) -> Void) {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        for part in parts.dropLast() { channel.write(part, promise: nil) }
        channel.writeAndFlush(parts.last ?? ByteBuffer(), promise: promise)
        promise.futureResult.whenComplete { result in
            if case .success = result { written(true) } else { written(false) }
        }
    }

    /// `callback` runs once the channel is closed.
    func whenClosed(_ callback: @escaping @Sendable () -> Void) {
        channel.closeFuture.whenComplete { _ in callback() }
    }
}
