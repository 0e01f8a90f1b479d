#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// `status --watch`: bytes per second each way, from the counters of two
/// polls (bytes_in/bytes_out deltas divided by the time between them).
/// Sessions are told apart by profile and name (status merges applies).
public struct ThroughputMeter: Sendable {
    public struct Rate: Sendable, Equatable {
        /// USB IN (device to VM), bytes per second.
        public var bytesInPerSecond: Double
        /// USB OUT (VM to device), bytes per second.
        public var bytesOutPerSecond: Double

        public init(bytesInPerSecond: Double, bytesOutPerSecond: Double) {
            self.bytesInPerSecond = bytesInPerSecond
            self.bytesOutPerSecond = bytesOutPerSecond
        }
    }

    private var last: [String: (at: Double, bytesIn: Int, bytesOut: Int)] = [:]

    public init() {}

    static func key(_ s: AssignmentStatus) -> String { "\(s.profile)\u{0}\(s.name)" }

    /// Records one poll taken at `time` (seconds, monotonic) and returns each
    /// session's rate since the previous poll, by position; nil for a
    /// session seen for the first time. A counter that went down (apply
    /// restarted) counts from zero.
    public mutating func update(_ sessions: [AssignmentStatus], at time: Double) -> [Rate?] {
        var next: [String: (at: Double, bytesIn: Int, bytesOut: Int)] = [:]
        let rates = sessions.map { s -> Rate? in
            let key = Self.key(s)
            next[key] = (time, s.bytesIn, s.bytesOut)
            guard let before = last[key], time > before.at else { return nil }
            let elapsed = time - before.at
            func delta(_ now: Int, _ then: Int) -> Double { Double(now >= then ? now - then : now) / elapsed }
            return Rate(bytesInPerSecond: delta(s.bytesIn, before.bytesIn), bytesOutPerSecond: delta(s.bytesOut, before.bytesOut))
        }
        last = next
        return rates
    }

    /// "0 B/s", "512 B/s", "1.5 KiB/s", "98.2 MiB/s"; "-" without a rate yet.
    public static func format(_ bytesPerSecond: Double?) -> String {
        guard let v = bytesPerSecond else { return "-" }
        let units = ["B/s", "KiB/s", "MiB/s", "GiB/s"]
        var value = v
        var unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        guard unit > 0 else { return "\(Int(value.rounded())) B/s" }
        // One decimal, as "%.1f" would print it (no String(format:) in FoundationEssentials).
        let tenths = Int((value * 10).rounded(.toNearestOrEven))   // as printf rounds a tie
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }
}
