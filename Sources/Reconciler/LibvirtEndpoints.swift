#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Libvirt
import Profile
import Transport

/// A libvirt endpoint is a domain name: where its SPICE server is, and its
/// password, are read from libvirt at each connect (autoport gives a new
/// port on every boot).
enum LibvirtEndpoints {
    /// libvirt's default spice_tls_x509_cert_dir CA, trusted for a domain
    /// that only opens a TLS port.
    static let defaultCA = "/etc/pki/libvirt-spice/ca-cert.pem"

    /// The domain's SPICE server now. Throws `DomainDown` when it is not
    /// running, ReconcilerError when it cannot carry usbredir at all.
    static func configuration(endpoint: String, domain: String, uri: String) async throws -> SpiceEndpointConfiguration {
        let resolved: ResolvedDomain
        do {
            resolved = try await Libvirt.shared.resolve(domain: domain, uri: uri)
        } catch LibvirtError.libraryMissing(let why) {
            // No retry helps until libvirt0 is installed (then SIGHUP).
            throw ReconcilerError.domain(endpoint: endpoint, why)
        } catch let error as LibvirtError {
            throw TransportError.unreachable(error.description)
        }
        guard resolved.state == .running else { throw DomainDown(domain: domain, state: resolved.state) }
        guard let graphics = resolved.graphics else {
            throw ReconcilerError.domain(endpoint: endpoint, "domain \(domain) has no SPICE graphics")
        }
        guard resolved.usbredirChannels > 0 else {
            throw ReconcilerError.domain(endpoint: endpoint,
                                         "domain \(domain) has no <redirdev bus='usb' type='spicevmc'/>")
        }
        guard let server = graphics.server else { throw DomainDown(domain: domain, state: .other(-1)) }
        let tls = graphics.tlsOnly
            ? TLSSettings(caFile: FileManager.default.fileExists(atPath: defaultCA) ? defaultCA : nil) : nil
        return SpiceEndpointConfiguration(server: server, password: graphics.password, tls: tls)
    }

    /// For plan: the address a connect would use now, or why there is none.
    static func describe(domain: String, uri: String) async -> String {
        do {
            let resolved = try await Libvirt.shared.resolve(domain: domain, uri: uri)
            guard resolved.state == .running else { return DomainDown(domain: domain, state: resolved.state).description }
            return resolved.graphics?.server.map { "\($0)" } ?? "domain \(domain) has no SPICE graphics"
        } catch {
            return "\(error)"
        }
    }
}

/// A libvirt domain that is not running: a state to show and wait in (a
/// lifecycle event ends the wait), not an error to retry in a loop.
struct DomainDown: Error, Sendable, CustomStringConvertible {
    let domain: String
    let state: DomainState

    var description: String {
        switch state {
        case .missing: "domain \(domain) does not exist"
        case .other(-1): "domain \(domain) has no SPICE port yet"
        default: "domain \(domain) is \(state)"
        }
    }
}
