import Foundation

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and reproducible from a
/// single 64-bit seed, which every randomized test prints when it fails.
struct SplitMix64: RandomNumberGenerator {
    private(set) var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func u8() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
    mutating func u16() -> UInt16 { UInt16(truncatingIfNeeded: next()) }
    mutating func u32() -> UInt32 { UInt32(truncatingIfNeeded: next()) }
    mutating func bool() -> Bool { next() & 1 == 1 }
    /// True with probability 1/n.
    mutating func oneIn(_ n: Int) -> Bool { Int.random(in: 0..<n, using: &self) == 0 }
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
    mutating func int(_ range: Range<Int>) -> Int { Int.random(in: range, using: &self) }
    mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count)
        while out.count < count {
            var word = next()
            for _ in 0..<min(8, count - out.count) {
                out.append(UInt8(truncatingIfNeeded: word))
                word >>= 8
            }
        }
        return out
    }
    mutating func pick<C: Collection>(_ c: C) -> C.Element { c.randomElement(using: &self)! }
}

enum TestSeed {
    /// Every randomized test derives its seed from this base, so one number
    /// reproduces a run. Set USBREDIR_TEST_SEED to explore other streams.
    static let base: UInt64 = {
        if let s = ProcessInfo.processInfo.environment["USBREDIR_TEST_SEED"], let v = UInt64(s) { return v }
        return 0x5553_4252_4544_4952   // "USBREDIR"
    }()

    /// A seed per test and configuration (FNV-1a of the label, mixed with the base).
    static func derive(_ label: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in label.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h ^ base
    }
}
