import NIOCore

/// What the engine has said to the VM and the connection has not taken yet,
/// in the order the engine said it. The engine appends synchronously (no
/// suspension between deciding to send and taking its place in line), so a
/// stream packet read before a stop can never land after the stop's status;
/// one writer task per connection takes everything queued as one batch,
/// written with one call (one flush) per burst.
struct Outbox {
    struct Item {
        var parts: [ByteBuffer]
        var bytes: Int
        var compressible: Bool
        /// Released once its bytes are written.
        var permit: InFlightBudget.Permit?
    }

    /// Items taken together by the writer task.
    struct Batch {
        var parts: [ByteBuffer] = []
        var bytes = 0
        var count = 0
        var compressible = true
        var permits: [InFlightBudget.Permit] = []
    }

    /// A batch grows up to this many bytes (a single larger item goes alone):
    /// a SPICE message per batch stays of a size the server handles well.
    static let batchBytes = 256 * 1024

    /// Identifies the connection; a writer task of an earlier one is ignored.
    let connection: Int
    private(set) var queue = CircularBuffer<Item>()
    private(set) var queuedBytes = 0
    /// Items appended and items written (or dropped), for `flushed`.
    private(set) var appended = 0
    private(set) var finished = 0
    /// The connection failed a write or ended: nothing more goes out.
    private(set) var broken = false
    var writerTask: Task<Void, Never>?
    /// The idle writer task, waiting for the next batch (nil: stop).
    var parked: CheckedContinuation<Batch?, Never>?
    var flushWaiters: [(mark: Int, continuation: CheckedContinuation<Bool, Never>)] = []
    var roomWaiters: [CheckedContinuation<Void, Never>] = []

    init(connection: Int) {
        self.connection = connection
    }

    mutating func append(_ item: Item) {
        queue.append(item)
        queuedBytes += item.bytes
        appended += 1
    }

    /// Everything queued up to `batchBytes`, in order, with one compressible hint.
    mutating func takeBatch() -> Batch? {
        guard let first = queue.first else { return nil }
        var batch = Batch(compressible: first.compressible)
        while let item = queue.first, item.compressible == batch.compressible,
              batch.count == 0 || batch.bytes + item.bytes <= Self.batchBytes {
            queue.removeFirst()
            batch.parts += item.parts
            batch.bytes += item.bytes
            batch.count += 1
            if let p = item.permit { batch.permits.append(p) }
        }
        return batch
    }

    /// A batch was written (or dropped with its connection): its bytes leave the count.
    mutating func wrote(_ batch: Batch) {
        queuedBytes -= batch.bytes
        finished += batch.count
    }

    /// Drops what is queued (the connection is gone); returns the permits to release.
    mutating func breakDown() -> [InFlightBudget.Permit] {
        broken = true
        let permits = queue.compactMap(\.permit)
        finished += queue.count
        queuedBytes = 0
        queue.removeAll()
        return permits
    }

    /// Flush waiters whose items are all written (or dropped).
    mutating func takeFlushed() -> [(mark: Int, continuation: CheckedContinuation<Bool, Never>)] {
        let done = flushWaiters.filter { $0.mark <= finished }
        flushWaiters.removeAll { $0.mark <= finished }
        return done
    }
}
