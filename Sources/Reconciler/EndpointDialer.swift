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
    /// `onConnected` gets the channel (SPICE) and the address connected to.
    func serve(onConnected: @escaping @Sendable (UInt8?, String) async -> Void,
               onIdle: @escaping @Sendable () async -> Void,
               onListening: @escaping @Sendable (RawUSBRedirListener) async -> Void) async throws -> SessionEnd {
        let session = self.session
        switch endpoint.kind {
        case .spice, .spiceUnix, .spiceTLS, .libvirt:
            guard let link else { preconditionFailure("a SPICE endpoint always has its link (Reconciler.updateLinks)") }
            let spice = try await link.session()
            guard let wanted = await link.channel(for: assignmentName, available: spice.usbredirChannelIDs) else {
                throw TransportError.noFreeChannel(available: spice.usbredirChannelIDs)
            }
            return try await spice.withUSBRedirChannel(wanted, eventLoop: session.eventLoop) { connection, id in
                await onConnected(id, "\(spice.configuration.server)")
                return await session.run(connection)
            }
        case .usbredir(let address):
            return try await RawUSBRedir.withConnection(to: address, eventLoop: session.eventLoop) { connection in
                await onConnected(nil, "\(address)")
                return await session.run(connection)
            }
        case .listen(let address):
            let listener = try await RawUSBRedirListener.bind(address, eventLoop: session.eventLoop)
            await onListening(listener)
            defer { listener.close() }
            try await listener.serve(allowing: endpoint.allowedPeers, refused: { peer in
                logger.warning("refused a peer not in allow", metadata: ["peer": "\(peer)"])
            }) { connection in
                await onConnected(nil, "\(address)")
                _ = await session.run(connection)
                await onIdle()
            }
            return .transportClosed(.closedLocally)
        }
    }

    /// For a displaced SPICE session: whether the client that displaced us
    /// has gone from `server` (nil when the server is not on this host and
    /// cannot be seen).
    static func displacingClientLeft(_ server: SpiceServerAddress) -> Bool? {
        SpiceClientCensus.otherClientsConnected(to: server).map { !$0 }
    }

    /// Links the SPICE session of `endpoint` (password and TLS settings from
    /// the profile).
    static func dialSpice(_ endpoint: Endpoint, environment: [String: String], logger: Logger) async throws -> SpiceSession {
        if case .libvirt(let domain, let uri) = endpoint.kind {
            return try await dialDomain(endpoint.name, domain: domain, uri: uri, logger: logger)
        }
        let password: String
        do {
            password = try endpoint.loadPassword(environment: environment) ?? ""
        } catch {
            throw ReconcilerError.password(endpoint: endpoint.name, "\(error)")
        }
        let config: SpiceEndpointConfiguration
        switch endpoint.kind {
        case .spiceTLS(let address, let caFile, let hostSubject):
            config = SpiceEndpointConfiguration(address: address, password: password,
                                                tls: TLSSettings(caFile: caFile, hostSubject: hostSubject))
        case .spiceUnix(let path):
            config = SpiceEndpointConfiguration(server: .unix(path), password: password)
        case .spice(let address), .usbredir(let address), .listen(let address):
            config = SpiceEndpointConfiguration(address: address, password: password)
        case .libvirt:
            preconditionFailure("libvirt endpoints are dialled by dialDomain")
        }
        return try await SpiceSession.connect(config, logger: logger)
    }

    /// A libvirt domain's SPICE session, resolved now. While a domain
    /// starts, libvirt shows the port before QEMU has the password set: a
    /// refused password is tried once more, resolved again, before it counts.
    static func dialDomain(_ name: String, domain: String, uri: String, logger: Logger) async throws -> SpiceSession {
        let config = try await LibvirtEndpoints.configuration(endpoint: name, domain: domain, uri: uri)
        do {
            return try await SpiceSession.connect(config, logger: logger)
        } catch TransportError.wrongPassword {
            try await Task.sleep(nanoseconds: passwordSettleNanoseconds)
            let again = try await LibvirtEndpoints.configuration(endpoint: name, domain: domain, uri: uri)
            return try await SpiceSession.connect(again, logger: logger)
        }
    }

    static let passwordSettleNanoseconds: UInt64 = 500_000_000
}
