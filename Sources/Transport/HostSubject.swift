import NIOCore
import NIOSSL
import X509

/// A SPICE `host-subject` ("C=XX,L=City,O=Org,CN=host", as remote-viewer
/// takes it): the server certificate's subject must hold exactly these
/// attributes. It replaces the hostname check, never the chain check.
struct HostSubject: Sendable, Equatable {
    let attributes: [String: [String]]

    init?(_ text: String) {
        var attributes: [String: [String]] = [:]
        for part in text.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2 else { return nil }
            let key = kv[0].trimmingCharacters(in: .whitespaces).uppercased()
            attributes[key, default: []].append(kv[1].trimmingCharacters(in: .whitespaces))
        }
        guard !attributes.isEmpty else { return nil }
        self.attributes = attributes.mapValues { $0.sorted() }
    }

    /// X.520 attribute type OIDs to the short names host-subject uses.
    private static let names: [String: String] = [
        "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU",
    ]

    /// The subject of a DER certificate in the same form.
    static func subject(ofDER der: [UInt8]) throws -> [String: [String]] {
        let certificate = try Certificate(derEncoded: der)
        var out: [String: [String]] = [:]
        for rdn in certificate.subject {
            for attribute in rdn {
                let oid = attribute.type.description
                let key = names[oid] ?? oid
                out[key, default: []].append(String(describing: attribute.value))
            }
        }
        return out.mapValues { $0.sorted() }
    }

    /// NIOSSL's hook that runs after its own chain verification succeeded.
    /// (An underscored API of the pinned swift-nio-ssl; it keeps the chain
    /// check and adds ours, which a custom callback would replace.)
    func verifier() -> _NIOAdditionalPeerCertificateVerificationCallback {
        { certificate, channel in
            do {
                let subject = try Self.subject(ofDER: certificate.toDERBytes())
                guard subject == attributes else {
                    return channel.eventLoop.makeFailedFuture(TransportError.tls(
                        "server certificate subject \(Self.format(subject)) does not match host-subject \(Self.format(attributes))"))
                }
                return channel.eventLoop.makeSucceededVoidFuture()
            } catch {
                return channel.eventLoop.makeFailedFuture(TransportError.tls("unreadable server certificate: \(error)"))
            }
        }
    }

    static func format(_ a: [String: [String]]) -> String {
        a.keys.sorted().flatMap { k in a[k]!.map { "\(k)=\($0)" } }.joined(separator: ",")
    }
}
