/// The keys of profile version 1 (architecture.md), one list per mapping.
enum Keys {
    static let root = ["version", "log", "metrics", "endpoints", "devices", "hosts"]
    static let endpointKinds = ["spice", "spice-tls", "usbredir", "listen", "libvirt"]
    static let endpoint = endpointKinds + ["password-file", "password-env", "ca-file", "host-subject", "allow", "uri"]
    static let device = ["name", "to", "log", "channel", "match", "virtual", "take-from-host"]
    static let match = ["vendor", "product", "serial", "port"]
    static let virtual = ["kind", "image", "read-only", "speed", "uas"]
    static let host = ["devices"]
}

/// The keys of profile version 1 as the decoder knows them (the `Keys`
/// tables of Schema.swift), for tools and tests outside this module, such
/// as the check that man/usbredir-profile.5 documents every key.
public enum ProfileSchema {
    /// Each mapping of a profile with the keys it allows, named as in `Keys`.
    public static let tables: [(mapping: String, keys: [String])] = [
        ("root", Keys.root),
        ("endpoint", Keys.endpoint),
        ("device", Keys.device),
        ("match", Keys.match),
        ("virtual", Keys.virtual),
        ("host", Keys.host),
    ]

    /// Every key, once, in table order.
    public static var allKeys: [String] {
        var seen = Set<String>()
        return tables.flatMap(\.keys).filter { seen.insert($0).inserted }
    }
}
