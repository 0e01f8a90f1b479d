import NIOCore
import Testing
@testable import Transport

/// LZ4 on the SPICE usbredir channel is tried only while it has been
/// shrinking this channel's data (issue #9: a stick's incompressible data
/// paid a compression pass on every large reply).
@Suite("AdaptiveCompressionTests")
struct AdaptiveCompressionTests {
    /// Drives the policy as SpiceVMCHandler does; returns how many were tried.
    static func run(_ policy: inout AdaptiveCompression, _ messages: [ByteBuffer]) -> Int {
        var tried = 0
        for m in messages where policy.shouldTry() {
            tried += 1
            let out = LZ4.compress(m)
            policy.record(shrank: out.map { $0.readableBytes <= m.readableBytes - m.readableBytes / 8 } ?? false)
        }
        return tried
    }

    static func random(_ n: Int) -> ByteBuffer {
        var g = SystemRandomNumberGenerator()
        return ByteBuffer(bytes: (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) })
    }

    @Test("incompressible data stops being tried; compressible data is noticed again by a probe")
    func adapts() {
        var policy = AdaptiveCompression()
        let noise = (0..<640).map { _ in Self.random(4096) }
        let tried = Self.run(&policy, noise)
        // The first few, then one probe in probeEvery.
        #expect(tried <= AdaptiveCompression.giveUpAfter + 640 / AdaptiveCompression.probeEvery, "tried \(tried) of 640")
        let text = ByteBuffer(bytes: (0..<4096).map { UInt8($0 % 7) })
        let afterwards = Self.run(&policy, Array(repeating: text, count: 200))
        // Once a probe shrinks, every message is tried again.
        #expect(afterwards >= 200 - AdaptiveCompression.probeEvery, "tried \(afterwards) of 200 compressible")
    }

    @Test("compressible data is always tried")
    func keepsCompressing() {
        var policy = AdaptiveCompression()
        let text = ByteBuffer(bytes: (0..<4096).map { UInt8($0 % 7) })
        #expect(Self.run(&policy, Array(repeating: text, count: 100)) == 100)
    }
}
