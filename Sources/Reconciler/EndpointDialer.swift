import Common
import Logging
import Profile
import Session
import Transport

/// The Reconciler's one seam to the Transport layer: every connection it
/// makes starts here. `EndpointDialer` connects one assignment's usbredir
/// channel the way its endpoint wants (a SPICE channel, a raw connect, or a
/// listen) and runs the session on it; `dialSpice` links an endpoint's one
/// SPICE session.
struct EndpointDialer: Sendable {
    let endpoint: Endpoint
    let assignmentName: String
    let link: SpiceEndpointLink?
    let session: RedirectionSession
    let logger: Logger

    /// Returns when the connection ends. For `listen`, each peer in turn is
    /// served; `onIdle` marks the wait for the next one.
    func serve(onConnected: @escaping @Sendable (UInt8?) async -> Void,
               onIdle: @escaping @Sendable () async -> Void,
               onListening: @escaping @Sendable (RawUSBRedirListener) async -> Void) async throws -> SessionEnd {
        let session = self.session
        switch endpoint.kind {
        case .spice, .spiceUnix, .spiceTLS:
            guard let link else { preconditionFailure("a SPICE endpoint always has its link (Reconciler.updateLinks)") }
            let spice = try await link.session()
            guard let wanted = await link.channel(for: assignmentName, available: spice.usbredirChannelIDs) else {
                throw TransportError.noFreeChannel(available: spice.usbredirChannelIDs)
            }
            return try await spice.withUSBRedirChannel(wanted) { connection, id in
                await onConnected(id)
                return await session.run(connection)
            }
        case .usbredir(let address):
            return try await RawUSBRedir.withConnection(to: address) { connection in
                await onConnected(nil)
                return await session.run(connection)
            }
        case .listen(let address):
            let listener = try await RawUSBRedirListener.bind(address)
            await onListening(listener)
            defer { listener.close() }
            try await listener.serve(allowing: endpoint.allowedPeers, refused: { peer in
                logger.warning("refused a peer not in allow", metadata: ["peer": "\(peer)"])
            }) { connection in
                await onConnected(nil)
                _ = await session.run(connection)
                await onIdle()
            }
            return .transportClosed(.closedLocally)
        }
    }

    /// For a displaced SPICE endpoint: whether the client that displaced us
    /// has gone (nil when the server is not on this host and cannot be seen).
    static func displacingClientLeft(_ endpoint: Endpoint) -> Bool? {
        SpiceClientCensus.otherClientsConnected(to: spiceServer(endpoint)).map { !$0 }
    }

    /// Where the endpoint's SPICE server listens.
    static func spiceServer(_ endpoint: Endpoint) -> SpiceServerAddress {
        switch endpoint.kind {
        case .spiceUnix(let path): .unix(path)
        case .spice(let address), .spiceTLS(let address, _, _), .usbredir(let address), .listen(let address): .tcp(address)
        }
    }

    /// Links the SPICE session of `endpoint` (password and TLS settings from
    /// the profile).
    static func dialSpice(_ endpoint: Endpoint, environment: [String: String], logger: Logger) async throws -> SpiceSession {
        let password: String
        do {
            password = try endpoint.loadPassword(environment: environment) ?? ""
        } catch {
            throw ReconcilerError.password(endpoint: endpoint.name, "\(error)")
        }
        var tls: TLSSettings?
        if case .spiceTLS(_, let caFile, let hostSubject) = endpoint.kind {
            tls = TLSSettings(caFile: caFile, hostSubject: hostSubject)
        }
        let config = SpiceEndpointConfiguration(server: spiceServer(endpoint), password: password, tls: tls)
        return try await SpiceSession.connect(config, logger: logger)
    }
}
