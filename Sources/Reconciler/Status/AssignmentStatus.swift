import Common
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The state of one assignment, as `status` reports it.
public enum AssignmentState: String, Sendable, Codable, CaseIterable {
    case waitingForDevice = "waiting-for-device"
    /// A libvirt domain that is not running (last_error says which state).
    case waitingForVM = "waiting-for-vm"
    case connecting
    case connected
    case backoff
    case displaced
    case rejected
    case error
}

/// One assignment's row in `status --json` (usbredir(1) lists the fields; architecture.md, Contracts).
public struct AssignmentStatus: Sendable, Codable, Equatable {
    public var name: String
    public var profile: String
    public var endpoint: String
    /// Where the session is connected: host:port or unix:PATH (a libvirt
    /// endpoint's resolved SPICE server); null while not connected.
    @NullWhenAbsent public var address: String?
    @NullWhenAbsent public var channel: Int?
    @NullWhenAbsent public var device: String?
    public var state: AssignmentState
    public var since: String
    public var bytesIn: Int
    public var transfersIn: Int
    public var bytesOut: Int
    public var transfersOut: Int
    @NullWhenAbsent public var lastError: String?
    /// Digest of the desired state this session runs (its entry, effective
    /// log level and endpoint), so `plan` can tell which assignments an
    /// edit changes.
    public var desiredDigest: String

    enum CodingKeys: String, CodingKey {
        case name, profile, endpoint, address, channel, device, state, since
        case bytesIn = "bytes_in", transfersIn = "transfers_in", bytesOut = "bytes_out", transfersOut = "transfers_out"
        case lastError = "last_error", desiredDigest = "desired_digest"
    }
}

/// What a running apply answers on its status socket.
public struct StatusReport: Sendable, Codable, Equatable {
    public var sessions: [AssignmentStatus]
    @NullWhenAbsent public var profilePath: String?
    /// Assignments whose rules overlap, with the present devices both match.
    public var conflicts: [MatchConflict]
    /// Matching devices left alone because the host uses them.
    public var heldByHost: [HostHeldDevice]

    public init(sessions: [AssignmentStatus], profilePath: String? = nil, conflicts: [MatchConflict] = [],
                heldByHost: [HostHeldDevice] = []) {
        self.sessions = sessions
        self.profilePath = profilePath
        self.conflicts = conflicts
        self.heldByHost = heldByHost
    }

    enum CodingKeys: String, CodingKey {
        case sessions, conflicts
        case profilePath = "profile_path", heldByHost = "held_by_host"
    }

}

