import Foundation
import NIOCore
import Session
import Testing
import Transport
import USBRedirProtocol

// A usb-guest peer for protocol tests: it plays QEMU's side of a usbredir
// connection over an in-memory duplex pipe, built on our own protocol module
// (USBRedirParser(role: .guest) and writeUSBRedirPacket).

/// One direction of an in-memory byte stream. Each write is one chunk,
/// delivered whole and in order; a write suspends while `capacity` bytes are
/// buffered (so a session that streams as fast as it can is held back by the
/// peer, as a socket would), and `close` ends a pending read once the
/// buffered chunks are drained.
final class BytePipe: @unchecked Sendable {
    private let lock = NSLock()
    private let capacity: Int
    private var chunks: [ByteBuffer] = []
    private var head = 0
    private var buffered = 0
    private var closed = false
    private var reader: CheckedContinuation<ByteBuffer?, Never>?
    private var writers: [CheckedContinuation<Void, Never>] = []
    private var _chunksRead = 0
    private var _bytesAccepted = 0

    init(capacity: Int = .max) { self.capacity = capacity }

    /// Bytes of every write the pipe has taken (buffered or handed over).
    var bytesAccepted: Int { lock.withLock { _bytesAccepted } }

    /// Chunks taken by the reading side so far.
    var chunksRead: Int { lock.withLock { _chunksRead } }
    /// Is the reading side suspended in `read` waiting for bytes?
    var readerIsWaiting: Bool { lock.withLock { reader != nil } }
    var isClosed: Bool { lock.withLock { closed } }

    private enum Step { case done, wait, closed, handOff(CheckedContinuation<ByteBuffer?, Never>) }

    /// Writes land in the order they were made, as on a socket: a small
    /// write may not pass a large one that waits for room. Each `write`
    /// takes a ticket; only the ticket being served may go in.
    private var nextTicket = 0
    private var serving = 0

    /// `ticket` nil: the peer's own sends (no capacity, no queue).
    private func offer(_ bytes: ByteBuffer, ticket: Int?) -> (Step, wake: [CheckedContinuation<Void, Never>]) {
        lock.withLock {
            if closed { return (.closed, []) }
            if let ticket {
                guard canTake(bytes.readableBytes, ticket: ticket) else { return (.wait, []) }
                serving += 1
            }
            // The next ticket may go in now: let the waiting writers look.
            let wake = ticket == nil ? [] : writers
            if ticket != nil { writers = [] }
            _bytesAccepted += bytes.readableBytes
            if let r = reader {
                reader = nil
                _chunksRead += 1
                return (.handOff(r), wake)
            }
            chunks.append(bytes)
            buffered += bytes.readableBytes
            return (.done, wake)
        }
    }

    private func canTake(_ count: Int, ticket: Int) -> Bool {
        ticket == serving && (reader != nil || buffered == 0 || buffered + count <= capacity)
    }

    /// Writes without waiting for room (for the peer's own sends, kept in order).
    func writeNow(_ bytes: ByteBuffer) throws {
        switch offer(bytes, ticket: nil).0 {
        case .closed: throw TransportError.closedByPeer
        case .handOff(let r): r.resume(returning: bytes)
        case .done, .wait: break
        }
    }

    func write(_ bytes: ByteBuffer) async throws {
        let ticket = lock.withLock { () -> Int in
            defer { nextTicket += 1 }
            return nextTicket
        }
        while true {
            let (step, wake) = offer(bytes, ticket: ticket)
            for w in wake { w.resume() }
            switch step {
            case .done: return
            case .closed: throw TransportError.closedByPeer
            case .handOff(let r): r.resume(returning: bytes); return
            case .wait:
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let now: Bool = lock.withLock {
                        if closed || canTake(bytes.readableBytes, ticket: ticket) { return true }
                        writers.append(c)
                        return false
                    }
                    if now { c.resume() }
                }
            }
        }
    }

    func read() async -> ByteBuffer? {
        await withCheckedContinuation { (c: CheckedContinuation<ByteBuffer?, Never>) in
            var result: ByteBuffer?? = nil
            var wake: [CheckedContinuation<Void, Never>] = []
            lock.withLock {
                precondition(reader == nil, "one reader at a time")
                if head < chunks.count {
                    let b = chunks[head]
                    head += 1
                    if head == chunks.count { chunks.removeAll(keepingCapacity: true); head = 0 }
                    buffered -= b.readableBytes
                    _chunksRead += 1
                    result = .some(b)
                    wake = writers
                    writers = []
                } else if closed {
                    result = .some(nil)
                } else {
                    reader = c
                }
            }
            for w in wake { w.resume() }
            if let result { c.resume(returning: result) }
        }
    }

    func close() {
        let (r, ws, cs): (CheckedContinuation<ByteBuffer?, Never>?, [CheckedContinuation<Void, Never>],
                          [@Sendable () -> Void]) = lock.withLock {
            closed = true
            defer { reader = nil; writers = []; closeCallbacks = [] }
            return (reader, writers, closeCallbacks)
        }
        r?.resume(returning: nil)
        for w in ws { w.resume() }
        for c in cs { c() }
    }

    private var closeCallbacks: [@Sendable () -> Void] = []

    /// `callback` runs once the pipe is closed (at once if it is).
    func whenClosed(_ callback: @escaping @Sendable () -> Void) {
        let now: Bool = lock.withLock {
            if closed { return true }
            closeCallbacks.append(callback)
            return false
        }
        if now { callback() }
    }
}

/// Counts the compressible hints the session gives with its writes.
final class WriteHints: @unchecked Sendable {
    private let lock = NSLock()
    private var _compressible = 0
    private var _incompressible = 0
    func record(_ compressible: Bool) {
        lock.withLock { if compressible { _compressible += 1 } else { _incompressible += 1 } }
    }
    var counts: (compressible: Int, incompressible: Int) { lock.withLock { (_compressible, _incompressible) } }
    func reset() { lock.withLock { _compressible = 0; _incompressible = 0 } }
}

/// The session's end of the duplex pipe.
final class MemoryReader: USBRedirByteReader, @unchecked Sendable {
    let pipe: BytePipe
    init(_ pipe: BytePipe) { self.pipe = pipe }
    func read() async throws -> ByteBuffer? { await pipe.read() }
}

struct MemoryWriter: USBRedirByteWriter {
    let toPeer: BytePipe
    let fromPeer: BytePipe
    let hints: WriteHints
    private let queue: PipeWriteQueue

    init(toPeer: BytePipe, fromPeer: BytePipe, hints: WriteHints) {
        self.toPeer = toPeer
        self.fromPeer = fromPeer
        self.hints = hints
        queue = PipeWriteQueue(toPeer)
    }

    func enqueue(_ packets: [OutgoingPacket], written: @escaping @Sendable (Bool) -> Void) {
        var joined = ByteBuffer()
        for packet in packets {
            hints.record(packet.compressible)
            for p in packet.parts { joined.writeImmutableBuffer(p) }
        }
        queue.add(joined, written: written)
    }
    /// Closes both directions: the session's pending read ends, the peer sees EOF.
    func close() {
        toPeer.close()
        fromPeer.close()
    }

    /// The peer closing its side is the connection's end, as a socket's FIN.
    func whenClosed(_ callback: @escaping @Sendable () -> Void) {
        fromPeer.whenClosed(callback)
    }
}

/// Packets the session handed over without waiting go into the pipe in that
/// order, each once the one before is in (as a socket's send queue would:
/// a peer that does not read holds them back).
final class PipeWriteQueue: Sendable {
    private let continuation: AsyncStream<(ByteBuffer, @Sendable (Bool) -> Void)>.Continuation

    init(_ pipe: BytePipe) {
        let (stream, continuation) = AsyncStream.makeStream(of: (ByteBuffer, @Sendable (Bool) -> Void).self)
        self.continuation = continuation
        Task {
            for await (bytes, written) in stream {
                do {
                    try await pipe.write(bytes)
                    written(true)
                } catch {
                    written(false)
                }
            }
        }
    }

    func add(_ bytes: ByteBuffer, written: @escaping @Sendable (Bool) -> Void) {
        continuation.yield((bytes, written))
    }

    deinit { continuation.finish() }
}

struct PeerError: Error, CustomStringConvertible {
    var description: String
}

/// What the peer saw of the host's device announcement.
struct Handshake: Sendable {
    var hello: USBRedirMessage.Hello
    var interfaceInfo: USBRedirMessage.InterfaceInfo?
    var epInfo: USBRedirMessage.EPInfo?
    var deviceConnect: USBRedirMessage.DeviceConnect?
    /// Log indexes of hello, interface_info, ep_info, device_connect.
    var order: [Int]
}

/// A usb-guest peer. Everything the host sends is parsed (as QEMU would parse
/// it, so a malformed reply fails the test) and logged; tests take packets
/// out of the log by predicate, each packet at most once, with a timeout.
actor GuestPeer {
    struct Logged: Sendable {
        var index: Int
        var packet: USBRedirPacket
    }

    private struct Waiter {
        var what: String
        var predicate: @Sendable (USBRedirPacket) -> Bool
        var continuation: CheckedContinuation<Logged, any Error>
    }

    nonisolated let name: String
    /// Peer to session (unbounded: the peer's sends never block).
    nonisolated let toSession = BytePipe()
    /// Session to peer (bounded: back-pressure on the session).
    nonisolated let toPeer = BytePipe(capacity: 256 * 1024)
    nonisolated let hints = WriteHints()
    nonisolated let capabilities: USBRedirCapabilities

    private var parser: USBRedirParser
    private(set) var log: [USBRedirPacket] = []
    private var taken = Set<Int>()
    private var waiters: [Int: Waiter] = [:]
    private var nextWaiterID = 0
    private(set) var inputEnded = false
    /// A parse error on what the host sent (a test failure: the host must send valid usbredir).
    private(set) var hostError: USBRedirProtocolError?
    private(set) var bytesReceived = 0

    init(name: String = "guest", capabilities: USBRedirCapabilities = .all) {
        self.name = name
        self.capabilities = capabilities
        parser = USBRedirParser(role: .guest, capabilities: capabilities)
    }

    /// Runs `session` against this peer: the returned task ends with `run`'s result.
    nonisolated func serve(_ session: RedirectionSession) -> Task<SessionEnd, Never> {
        let reader = MemoryReader(toSession)
        let writer = MemoryWriter(toPeer: toPeer, fromPeer: toSession, hints: hints)
        let name = self.name
        startPump()
        return Task {
            await session.run(USBRedirConnection(reader: reader, writer: writer, peerDescription: "memory \(name)"))
        }
    }

    private nonisolated func startPump() {
        let pipe = toPeer
        Task {
            while true {
                await self.waitWhileNotReading()
                guard let chunk = await pipe.read() else { break }
                await self.ingest(chunk)
            }
            await self.endInput()
        }
    }

    // MARK: A peer that stops reading

    private var notReading = false
    private var resumeReading: CheckedContinuation<Void, Never>?

    /// The peer stops taking what the session writes (after the chunk it may
    /// be waiting for already): the session's writes fill the pipe and block.
    func stopReading() { notReading = true }

    func startReading() {
        notReading = false
        resumeReading?.resume()
        resumeReading = nil
    }

    private func waitWhileNotReading() async {
        guard notReading else { return }
        await withCheckedContinuation { resumeReading = $0 }
    }

    private func ingest(_ chunk: ByteBuffer) {
        bytesReceived += chunk.readableBytes
        guard hostError == nil else { return }
        parser.append(chunk)
        do {
            while let packet = try parser.nextPacket() {
                log.append(packet)
                deliver(Logged(index: log.count - 1, packet: packet))
            }
        } catch {
            hostError = error
            failAll("host sent malformed usbredir: \(error)")
        }
    }

    private func endInput() {
        inputEnded = true
        failAll("connection closed")
    }

    private func deliver(_ logged: Logged) {
        for id in waiters.keys.sorted() {
            guard let w = waiters[id], w.predicate(logged.packet) else { continue }
            waiters[id] = nil
            taken.insert(logged.index)
            w.continuation.resume(returning: logged)
            return
        }
    }

    private func failAll(_ why: String) {
        let all = waiters
        waiters = [:]
        for (_, w) in all { w.continuation.resume(throwing: PeerError(description: "\(name): waiting for \(w.what): \(why)")) }
    }

    private func expire(_ id: Int, after seconds: Double) {
        guard let w = waiters.removeValue(forKey: id) else { return }
        let seen = log.map { "\($0.message.type)#\($0.id)" }.suffix(12).joined(separator: ", ")
        w.continuation.resume(throwing: PeerError(
            description: "\(name): timed out after \(seconds) s waiting for \(w.what); last packets: [\(seen)]"))
    }

    /// Takes the first packet not yet taken that matches, waiting for it.
    @discardableResult
    func take(_ what: String, timeout: Double = 5, where predicate: @escaping @Sendable (USBRedirPacket) -> Bool) async throws -> Logged {
        for (i, p) in log.enumerated() where !taken.contains(i) && predicate(p) {
            taken.insert(i)
            return Logged(index: i, packet: p)
        }
        if let hostError { throw PeerError(description: "\(name): host sent malformed usbredir: \(hostError)") }
        if inputEnded { throw PeerError(description: "\(name): waiting for \(what): connection closed") }
        let id = nextWaiterID
        nextWaiterID += 1
        return try await withCheckedThrowingContinuation { c in
            waiters[id] = Waiter(what: what, predicate: predicate, continuation: c)
            Task {
                try? await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
                self.expire(id, after: timeout)
            }
        }
    }

    @discardableResult
    func take(_ type: USBRedirMessageType, id: UInt64? = nil, timeout: Double = 5) async throws -> Logged {
        try await take("\(type)" + (id.map { " id \($0)" } ?? ""), timeout: timeout) {
            $0.message.type == type && (id == nil || $0.id == id)
        }
    }

    // MARK: Sending

    /// What the handshake settled (id width, bulk length width).
    var negotiation: USBRedirNegotiation { parser.negotiation }

    func send(_ message: USBRedirMessage, id: UInt64 = 0) throws {
        var b = ByteBuffer()
        try b.writeUSBRedirPacket(USBRedirPacket(id: id, message), negotiation: parser.negotiation)
        try sendRaw(b)
    }

    /// Several packets in one write (the host reads them in one read).
    func sendAll(_ packets: [(USBRedirMessage, id: UInt64)]) throws {
        var b = ByteBuffer()
        for (message, id) in packets {
            try b.writeUSBRedirPacket(USBRedirPacket(id: id, message), negotiation: parser.negotiation)
        }
        try sendRaw(b)
    }

    /// Arbitrary bytes, as they are.
    func sendRaw(_ bytes: ByteBuffer) throws {
        do { try toSession.writeNow(bytes) } catch { throw PeerError(description: "\(name): connection closed") }
    }

    func sendRaw(_ bytes: [UInt8]) throws { try sendRaw(ByteBuffer(bytes: bytes)) }

    /// Sends a request and waits for the host's reply with the same id.
    func request(_ message: USBRedirMessage, id: UInt64, timeout: Double = 5) async throws -> USBRedirPacket {
        guard let replyType = Self.replyType(of: message.type) else {
            throw PeerError(description: "\(message.type) has no reply")
        }
        try send(message, id: id)
        return try await take(replyType, id: id, timeout: timeout).packet
    }

    static func replyType(of type: USBRedirMessageType) -> USBRedirMessageType? {
        switch type {
        case .controlPacket, .bulkPacket, .interruptPacket: type
        case .setConfiguration, .getConfiguration: .configurationStatus
        case .setAltSetting, .getAltSetting: .altSettingStatus
        case .startIsoStream, .stopIsoStream: .isoStreamStatus
        case .startInterruptReceiving, .stopInterruptReceiving: .interruptReceivingStatus
        case .allocBulkStreams, .freeBulkStreams: .bulkStreamsStatus
        case .startBulkReceiving, .stopBulkReceiving: .bulkReceivingStatus
        default: nil
        }
    }

    // MARK: Conveniences

    /// QEMU's opening: our hello first, then the host's hello and (when it
    /// has a device) interface_info, ep_info, device_connect, in that order.
    func connect(expectDevice: Bool = true, timeout: Double = 5) async throws -> Handshake {
        try send(.hello(.init(version: "qemu usb-redir guest (test peer)", capabilities: capabilities)))
        let hello = try await take(.hello, timeout: timeout)
        guard case .hello(let h) = hello.packet.message else { fatalError() }
        var hs = Handshake(hello: h, order: [hello.index])
        guard expectDevice else { return hs }
        let ii = try await take(.interfaceInfo, timeout: timeout)
        let ep = try await take(.epInfo, timeout: timeout)
        let dc = try await take(.deviceConnect, timeout: timeout)
        if case .interfaceInfo(let m) = ii.packet.message { hs.interfaceInfo = m }
        if case .epInfo(let m) = ep.packet.message { hs.epInfo = m }
        if case .deviceConnect(let m) = dc.packet.message { hs.deviceConnect = m }
        hs.order += [ii.index, ep.index, dc.index]
        return hs
    }

    /// A control transfer as QEMU sends it (endpoint = direction bit of bmRequestType).
    func control(requestType: UInt8, request: UInt8, value: UInt16, index: UInt16, length: UInt16,
                 data: ByteBuffer? = nil, id: UInt64) async throws -> USBRedirMessage.ControlPacket {
        let reply = try await self.request(.controlPacket(.init(
            endpoint: requestType & 0x80, request: request, requestType: requestType, status: 0,
            value: value, index: index, length: requestType & 0x80 != 0 ? length : UInt16(data?.readableBytes ?? 0),
            data: requestType & 0x80 != 0 ? nil : (data ?? ByteBuffer()))), id: id)
        guard case .controlPacket(let p) = reply.message else { throw PeerError(description: "not a control packet") }
        return p
    }

    func bulkIn(endpoint: UInt8, length: UInt32, id: UInt64, streamID: UInt32 = 0,
                timeout: Double = 5) async throws -> USBRedirMessage.BulkPacket {
        try sendBulkIn(endpoint: endpoint, length: length, id: id, streamID: streamID)
        return try await bulkReply(id: id, timeout: timeout)
    }

    func sendBulkIn(endpoint: UInt8, length: UInt32, id: UInt64, streamID: UInt32 = 0) throws {
        try send(.bulkPacket(.init(endpoint: endpoint, status: 0, length: length, streamID: streamID)), id: id)
    }

    func bulkReply(id: UInt64, timeout: Double = 5) async throws -> USBRedirMessage.BulkPacket {
        let reply = try await take(.bulkPacket, id: id, timeout: timeout)
        guard case .bulkPacket(let p) = reply.packet.message else { throw PeerError(description: "not bulk") }
        return p
    }

    func bulkOut(endpoint: UInt8, data: ByteBuffer, id: UInt64) async throws -> USBRedirMessage.BulkPacket {
        let reply = try await request(.bulkPacket(.init(endpoint: endpoint, status: 0,
                                                        length: UInt32(data.readableBytes), streamID: 0, data: data)), id: id)
        guard case .bulkPacket(let p) = reply.message else { throw PeerError(description: "not bulk") }
        return p
    }

    /// A round trip the session answers in order after everything sent before
    /// it (get_configuration is handled inline by the session's reader).
    @discardableResult
    func barrier(id: UInt64) async throws -> Logged {
        try send(.getConfiguration, id: id)
        return try await take(.configurationStatus, id: id)
    }

    /// Packets of `type` logged after `index`.
    func packets(_ type: USBRedirMessageType, after index: Int = -1) -> [Logged] {
        log.enumerated().filter { $0.offset > index && $0.element.message.type == type }
            .map { Logged(index: $0.offset, packet: $0.element) }
    }

    var count: Int { log.count }

    /// Waits until the session closed the connection (EOF on our side).
    func waitForClose(timeout: Double = 5) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !inputEnded {
            if Date() > deadline { throw PeerError(description: "\(name): connection not closed within \(timeout) s") }
            try await Task.sleep(nanoseconds: 2_000_000)
        }
    }

    /// Ends our side of the connection.
    nonisolated func close() { toSession.close() }
}

/// Waits until `condition` holds (polled), failing after `timeout`.
func eventually(_ what: String, timeout: Double = 5,
                _ condition: @Sendable () async -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while !(await condition()) {
        if Date() > deadline { throw PeerError(description: "timed out after \(timeout) s waiting until \(what)") }
        try await Task.sleep(nanoseconds: 1_000_000)
    }
}

/// `body` must finish within `timeout`, else this throws (the test fails
/// rather than hangs). The body runs unstructured, so one that ignores
/// cancellation (awaiting a Task's value) cannot hold the test up.
func within<T: Sendable>(_ timeout: Double, _ what: String,
                         _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let once = Once<T>()
    return try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
        once.set(c)
        let work = Task {
            do { once.resume(with: .success(try await body())) } catch { once.resume(with: .failure(error)) }
        }
        Task {
            try? await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
            once.resume(with: .failure(PeerError(description: "\(what) did not finish within \(timeout) s")))
            work.cancel()
        }
    }
}

/// A continuation resumed at most once, by whichever side comes first.
final class Once<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, any Error>?
    private var early: Result<T, any Error>?

    func set(_ c: CheckedContinuation<T, any Error>) {
        let r: Result<T, any Error>? = lock.withLock {
            if let early { return early }
            continuation = c
            return nil
        }
        if let r { c.resume(with: r) }
    }

    func resume(with result: Result<T, any Error>) {
        let c: CheckedContinuation<T, any Error>? = lock.withLock {
            if let c = continuation { continuation = nil; early = nil; return c }
            if early == nil { early = result }
            return nil
        }
        c?.resume(with: result)
    }
}
