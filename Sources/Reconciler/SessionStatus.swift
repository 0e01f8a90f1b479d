import Foundation

/// The state of one assignment, as `status` reports it.
public enum SessionState: String, Sendable, Codable {
    case waitingForDevice = "waiting-for-device"
    case connecting
    case connected
    case backoff
    case displaced
    case rejected
    case error
}

/// One session in `status --json` (design.md lists the fields).
public struct SessionStatus: Sendable, Codable, Equatable {
    public var name: String
    public var profile: String
    public var endpoint: String
    public var channel: Int?
    public var device: String?
    public var state: SessionState
    public var since: String
    public var bytesIn: Int
    public var transfersIn: Int
    public var bytesOut: Int
    public var transfersOut: Int
    public var lastError: String?

    enum CodingKeys: String, CodingKey {
        case name, profile, endpoint, channel, device, state, since
        case bytesIn = "bytes_in", transfersIn = "transfers_in", bytesOut = "bytes_out", transfersOut = "transfers_out"
        case lastError = "last_error"
    }

    /// Encodes `channel`, `device` and `last_error` as null when absent.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(profile, forKey: .profile)
        try c.encode(endpoint, forKey: .endpoint)
        try c.encode(channel, forKey: .channel)
        try c.encode(device, forKey: .device)
        try c.encode(state, forKey: .state)
        try c.encode(since, forKey: .since)
        try c.encode(bytesIn, forKey: .bytesIn)
        try c.encode(transfersIn, forKey: .transfersIn)
        try c.encode(bytesOut, forKey: .bytesOut)
        try c.encode(transfersOut, forKey: .transfersOut)
        try c.encode(lastError, forKey: .lastError)
    }
}

/// What a running apply answers on its status socket.
public struct StatusReport: Sendable, Codable, Equatable {
    public var sessions: [SessionStatus]
    /// Digest of the profile text the apply runs, for `plan --detailed-exitcode`.
    public var profileDigest: String?
    public var profilePath: String?

    public init(sessions: [SessionStatus], profileDigest: String? = nil, profilePath: String? = nil) {
        self.sessions = sessions
        self.profileDigest = profileDigest
        self.profilePath = profilePath
    }

    enum CodingKeys: String, CodingKey {
        case sessions
        case profileDigest = "profile_digest"
        case profilePath = "profile_path"
    }
}

enum RFC3339 {
    static func string(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: date)
    }
}
