import Common
import Foundation
import Testing

/// The hand-written UTC timestamps (no ICU) say what Foundation's
/// ISO8601DateFormatter says, over leap days, year ends and milliseconds.
@Suite("RFC3339Tests")
struct RFC3339Tests {
    static func foundation(_ date: Date, fractional: Bool) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = fractional ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: date)
    }

    @Test func agreesWithISO8601DateFormatter() {
        var generator = SystemRandomNumberGenerator()
        let fixed: [TimeInterval] = [0, 951_782_400, 1_709_164_799.5, 1_798_761_599.999, 4_102_444_800.25]
        let random = (0..<2000).map { _ in TimeInterval(Int.random(in: 0..<4_102_444_800, using: &generator))
            + TimeInterval(Int.random(in: 0..<1000, using: &generator)) / 1000 + 0.0004 }
        for t in fixed + random {
            let date = Date(timeIntervalSince1970: t)
            #expect(RFC3339.string(date) == Self.foundation(date, fractional: false))
            #expect(RFC3339.string(date, milliseconds: true) == Self.foundation(date, fractional: true), "\(t)")
        }
    }

    @Test func shape() {
        #expect(RFC3339.string(Date(timeIntervalSince1970: 1_798_761_599.25), milliseconds: true)
                == "2026-12-31T23:59:59.250Z")
        #expect(RFC3339.string(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00Z")
    }
}
