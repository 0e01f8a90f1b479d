import Devices
import Logging
import NIOCore
import Transport
import USBRedirProtocol

/// The usbredir *host* side of one channel: it owns (at most) one device and
/// services every request the VM makes of it. One object lives as long as its
/// assignment; connections come and go (`run` once per connection) and the
/// device is plugged and unplugged independently of them.
public final class RedirectionSession: Sendable {
    public let name: String
    private let engine: SessionEngine
    private let limits: SessionLimits
    private let logger: Logger
    private let loop = SessionLoop()

    /// The event loop the session runs on: its connections are best made
    /// on it (the transport's `eventLoop:` parameters), so that reading,
    /// the engine and writing share one thread.
    public var eventLoop: any EventLoop { loop.eventLoop }

    public init(name: String, logger: Logger, limits: SessionLimits = SessionLimits()) {
        self.name = name
        self.limits = limits
        var logger = logger
        logger[metadataKey: "session"] = "\(name)"
        self.logger = logger
        self.engine = SessionEngine(logger: logger, limits: limits, loop: loop)
    }

    public var phase: SessionPhase { get async { await engine.phase } }
    public var counters: SessionCounters { get async { await engine.countersNow } }
    public var lastError: String? { get async { await engine.lastError } }
    public var hasDevice: Bool { get async { await engine.device != nil } }

    /// Plugs a device: it is announced to the VM now or when a connection is up.
    public func plug(_ device: any USBDevice) async throws {
        try await device.open()
        await engine.plug(device)
    }

    /// Unplugs the device: device_disconnect to the VM, transfers cancelled.
    public func unplug() async {
        await engine.unplug()
    }

    /// Serves one connection until it ends. Malformed bytes from the VM end
    /// this session only, with the reason logged.
    public func run(_ connection: USBRedirConnection) async -> SessionEnd {
        // The reader (and everything it awaits that is not the engine's)
        // runs on the session's loop too.
        await withTaskExecutorPreference(loop) { await serveConnection(connection) }
    }

    private func serveConnection(_ connection: USBRedirConnection) async -> SessionEnd {
        let number = await engine.begin(writer: connection.writer)
        connection.writer.whenClosed { [engine] in
            Task { await engine.connectionClosed(number) }
        }
        logger.debug("usbredir connection up", metadata: ["peer": "\(connection.peerDescription)"])
        let end: SessionEnd
        do {
            end = try await withHelloDeadline(connection) {
                // On the session's loop the engine takes the channel itself;
                // a memory connection, or one on another loop, is read by a task.
                if let channel = connection.liveChannel, channel.eventLoop === loop.eventLoop {
                    return try await serveOnChannel(connection, channel)
                }
                return try await serve(connection)
            }
        } catch let error as USBRedirProtocolError {
            logger.error("closing the connection: malformed usbredir from the VM: \(error)")
            connection.writer.close()
            end = .protocolError(error.description)
        } catch let error as TransportError {
            end = .transportClosed(error)
        } catch {
            end = .transportClosed(.protocolViolation("\(error)"))
        }
        if case .rejectedByFilter = end { connection.writer.close() }
        await engine.end(reason: end.description)
        return end
    }

    /// A peer that connects and never says hello must not hold the channel
    /// (on a `listen:` endpoint it would keep the real VM out): after
    /// `limits.helloTimeoutNanoseconds` without one, the connection closes.
    private func withHelloDeadline(_ connection: USBRedirConnection,
                                   _ body: () async throws -> SessionEnd) async throws -> SessionEnd {
        let expired = ExpiryFlag()
        let watchdog = Task { [engine, limits, writer = connection.writer] in
            try await Task.sleep(nanoseconds: limits.helloTimeoutNanoseconds)
            guard await engine.negotiation == nil else { return }
            expired.set()
            writer.close()
        }
        defer { watchdog.cancel() }
        do {
            let end = try await body()
            if expired.isSet { return .protocolError(helloTimeoutReason) }
            return end
        } catch where expired.isSet {
            return .protocolError(helloTimeoutReason)
        }
    }

    private var helloTimeoutReason: String {
        "no usbredir hello within \(Double(limits.helloTimeoutNanoseconds) / 1e9) s"
    }

    /// The connection read by the session's channel handler, in the loop's turn.
    private func serveOnChannel(_ connection: USBRedirConnection, _ channel: Channel) async throws -> SessionEnd {
        let ended = channel.eventLoop.makePromise(of: SessionEnd.self)
        let (engine, logger) = (self.engine, self.logger)
        do {
            try await channel.eventLoop.submit {
                try connection.addHandler(SessionChannelHandler(engine: engine, closeReason: connection.closeReason,
                                                                ended: ended, logger: logger))
            }.get()
        } catch {
            return .transportClosed(try await connection.closeReason.get())
        }
        // The handler ends the session when the connection does; a caller
        // that gives up on the session (its assignment stops) ends the
        // connection, or it would stay open with nothing serving it.
        return try await withTaskCancellationHandler {
            try await ended.futureResult.get()
        } onCancel: {
            connection.writer.close()
        }
    }

    private func serve(_ connection: USBRedirConnection) async throws -> SessionEnd {
        while true {
            let read: ByteBuffer?
            do {
                read = try await connection.reader.read()
            } catch {
                // A rejection closes the connection itself (see SessionEngine.reject).
                if await engine.rejected { return .rejectedByFilter }
                throw error
            }
            guard let bytes = read else {
                return await engine.rejected ? .rejectedByFilter : .transportClosed(.closedByPeer)
            }
            // One hop to the engine per read, not per packet.
            if let end = try await engine.receive(bytes) { return end }
        }
    }
}
