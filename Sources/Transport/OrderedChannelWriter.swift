import NIOConcurrencyHelpers
import NIOCore

/// Writes whole packets to a channel from any thread without waiting for
/// them: the caller (a session engine, serialised by its actor) hands a
/// packet over and goes on. Each packet's parts are written in one
/// event-loop task, so nothing another writer puts on the channel comes
/// between them, and packets go out in the order they were given (the
/// loop runs its tasks in order). The last write task of a burst flushes:
/// a burst becomes one writev, and a lone packet is flushed at once (a
/// flush task of its own would run only after the loop's next reads).
///
/// This replaces a writer task that awaited every write: that task cost
/// two thread wake-ups per burst (the pool thread it ran on, then the loop).
final class OrderedChannelWriter: Sendable {
    private let channel: Channel
    /// Write tasks queued on the loop and not run yet.
    private let pending = NIOLockedValueBox(0)

    init(channel: Channel) {
        self.channel = channel
    }

    /// Queues `parts` as one packet. `written` runs on the event loop once
    /// they are on the socket (true) or the channel failed or closed (false).
    func write(_ parts: [ByteBuffer], written: @escaping @Sendable (Bool) -> Void) {
        let channel = self.channel
        pending.withLockedValue { $0 += 1 }
        channel.eventLoop.execute {
            let promise = channel.eventLoop.makePromise(of: Void.self)
            for part in parts.dropLast() { channel.write(part, promise: nil) }
            channel.write(parts.last ?? ByteBuffer(), promise: promise)
            promise.futureResult.whenComplete { result in
                if case .success = result { written(true) } else { written(false) }
            }
            let last = self.pending.withLockedValue { count in
                count -= 1
                return count == 0
            }
            if last { channel.flush() }
        }
    }
}
