/// Exponential backoff with jitter for an unreachable endpoint: starts near
/// 0.5 s, doubles, capped at 10 s (architecture.md), so a VM that comes back is
/// served within about 10 s.
struct Backoff: Sendable {
    static let initialSeconds = 0.5
    static let capSeconds = 10.0
    private(set) var attempt = 0

    /// The next delay, with ±20 % jitter so many sessions do not retry in step.
    mutating func nextDelay() -> Double {
        let base = min(Self.capSeconds, Self.initialSeconds * Double(1 << min(attempt, 8)))
        attempt += 1
        return min(Self.capSeconds, base * Double.random(in: 0.8...1.2))
    }

    mutating func reset() { attempt = 0 }
}
