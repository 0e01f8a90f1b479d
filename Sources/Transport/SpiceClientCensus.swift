import Common
#if canImport(Glibc)
import Glibc
#endif

/// Who else holds a SPICE server's port, read from this host's socket table.
///
/// SPICE never says why it dropped a client: a second client linking
/// (displacement) and `set_password ... disconnect` (or a QEMU restart) close
/// our channels the same way (spice-server calls one disconnect routine for
/// both). What differs is afterwards: a displacing client stays connected.
/// When the server runs on this host its accepted connections are in
/// /proc/net/tcp{,6} with the server's address and port as their local end,
/// so we can count them; a unix-socket server's accepted connections are in
/// /proc/net/unix under its path. A remote server's sockets are not visible:
/// `nil`.
public enum SpiceClientCensus {
    /// Whether another client is connected to `server`, or nil when this
    /// host cannot tell (the server is not local).
    public static func otherClientsConnected(to server: SpiceServerAddress) -> Bool? {
        switch server {
        case .tcp(let address): otherClientsConnected(to: address)
        case .unix(let path): readProcFile("/proc/net/unix").map { connectedUnixSockets(in: $0, path: path) > 0 }
        }
    }

    /// Whether a unix-socket server's listening socket exists (nil for TCP:
    /// a connection attempt tells).
    public static func isListening(_ server: SpiceServerAddress) -> Bool? {
        guard case .unix(let path) = server else { return nil }
        return readProcFile("/proc/net/unix").map { unixSockets(in: $0, path: path, state: "01") > 0 }
    }

    /// Accepted connections of a listening unix socket carry its path and
    /// state 03 (connected); the listener itself is 01, and a client's own
    /// end has no path.
    static func connectedUnixSockets(in table: String, path: String) -> Int {
        unixSockets(in: table, path: path, state: "03")
    }

    /// Lines of /proc/net/unix (`Num RefCount Protocol Flags Type St Inode
    /// Path`) with this path and state (01 unconnected, as a listener is).
    static func unixSockets(in table: String, path: String, state: Substring) -> Int {
        table.split(separator: "\n").dropFirst().filter { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            return fields.count >= 8 && fields[5] == state && fields[7...].joined(separator: " ") == path
        }.count
    }

    /// Whether another client is connected to the TCP server at `address`,
    /// or nil when this host cannot tell (the server is not local).
    public static func otherClientsConnected(to address: HostPort) -> Bool? {
        guard let target = LocalAddress.resolve(address.host), target.isLocal else { return nil }
        let tables = ["/proc/net/tcp", "/proc/net/tcp6"].compactMap(readProcFile)
        guard !tables.isEmpty else { return nil }
        return tables.contains { table in
            table.split(separator: "\n").dropFirst().contains { line in
                guard let entry = SocketTableEntry(line) else { return false }
                return entry.isEstablished && entry.localPort == address.port && target.matches(entry.localAddress)
            }
        }
    }
}

/// A /proc file's text (its size reads as 0, so read until the end).
func readProcFile(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16 * 1024)
    while true {
        let n = fread(&chunk, 1, chunk.count, file)
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// One line of /proc/net/tcp or tcp6: `sl local rem st ...`, addresses as
/// hex words in host byte order, ports in hex.
struct SocketTableEntry {
    let localAddress: [UInt8]
    let localPort: Int
    let state: UInt8

    var isEstablished: Bool { state == 0x01 }

    init?(_ line: Substring) {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count > 3 else { return nil }
        let local = fields[1].split(separator: ":")
        guard local.count == 2, let port = Int(local[1], radix: 16), let state = UInt8(fields[3], radix: 16),
              let address = Self.addressBytes(local[0]) else { return nil }
        self.localAddress = address
        self.localPort = port
        self.state = state
    }

    /// The kernel prints each 32-bit word of the network-order address as a
    /// native integer: the word's native bytes are the address bytes.
    static func addressBytes(_ hex: Substring) -> [UInt8]? {
        guard hex.count == 8 || hex.count == 32 else { return nil }
        var bytes: [UInt8] = []
        var start = hex.startIndex
        while start < hex.endIndex {
            let end = hex.index(start, offsetBy: 8)
            guard let word = UInt32(hex[start..<end], radix: 16) else { return nil }
            withUnsafeBytes(of: word) { bytes += $0 }
            start = end
        }
        return bytes
    }
}

/// A server address and whether it belongs to this host.
struct LocalAddress {
    let bytes: [UInt8]
    let isLocal: Bool

    /// An IPv4 address seen in tcp6 as ::ffff:a.b.c.d is the same address.
    func matches(_ other: [UInt8]) -> Bool {
        if other == bytes { return true }
        let mappedPrefix: [UInt8] = Array(repeating: 0, count: 10) + [0xff, 0xff]
        return bytes.count == 4 && other.count == 16 && Array(other.prefix(12)) == mappedPrefix
            && Array(other.suffix(4)) == bytes
    }

    /// `host` as an address (names through the resolver, first answer).
    static func resolve(_ host: String) -> LocalAddress? {
        guard let bytes = numeric(host) ?? lookUp(host) else { return nil }
        return LocalAddress(bytes: bytes, isLocal: isLoopback(bytes) || interfaceAddresses().contains(bytes))
    }

    static func numeric(_ host: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    static func lookUp(_ host: String) -> [UInt8]? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        return socketAddressBytes(first.pointee.ai_addr)
    }

    static func isLoopback(_ bytes: [UInt8]) -> Bool {
        bytes.count == 4 ? bytes[0] == 127 : bytes == Array(repeating: 0, count: 15) + [1]
    }

    static func interfaceAddresses() -> [[UInt8]] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var addresses: [[UInt8]] = []
        var cursor = list
        while let entry = cursor {
            if let bytes = socketAddressBytes(entry.pointee.ifa_addr) { addresses.append(bytes) }
            cursor = entry.pointee.ifa_next
        }
        return addresses
    }

    static func socketAddressBytes(_ address: UnsafeMutablePointer<sockaddr>?) -> [UInt8]? {
        guard let address else { return nil }
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            return address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                withUnsafeBytes(of: p.pointee.sin_addr) { Array($0) }
            }
        case AF_INET6:
            return address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                withUnsafeBytes(of: p.pointee.sin6_addr) { Array($0) }
            }
        default:
            return nil
        }
    }
}
