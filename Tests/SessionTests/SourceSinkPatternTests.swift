import Devices
import NIOCore
import Testing

/// Source-sink serves bulk IN as slices of one pattern buffer, built once
/// (issue #9: generating the pattern on every transfer was a tenth of the
/// host's CPU under load).
@Suite("Source-sink pattern")
struct SourceSinkPatternTests {
    static func bulkIn(_ d: SourceSinkDevice, _ length: Int) async -> ByteBuffer? {
        await d.transfer(endpoint: SourceSinkDevice.bulkIn, length: length, data: nil, streamID: 0).data
    }

    static func address(_ b: ByteBuffer?) -> UnsafeRawPointer? {
        b?.withUnsafeReadableBytes { $0.baseAddress.map { UnsafeRawPointer($0) } }
    }

    @Test("every length is the pattern, also after the buffer grew; repeated transfers share storage")
    func slicesOfOneBuffer() async throws {
        let d = SourceSinkDevice(serial: "SS-PATTERN")
        #expect(await d.setConfiguration(1) == .success)
        for length in [1, 63, 64, 16 * 1024, 64 * 1024 + 1, 1 << 20, 100, SourceSinkDevice.maxTransferLength] {
            let data = await Self.bulkIn(d, length)
            #expect(data?.readableBytes == length)
            #expect(isSourceSinkPattern(data), "length \(length)")
        }
        // After the largest, no transfer makes bytes: all start at one address.
        let a = await Self.bulkIn(d, 16 * 1024)
        let b = await Self.bulkIn(d, 16 * 1024)
        let c = await Self.bulkIn(d, 512)
        #expect(Self.address(a) != nil)
        #expect(Self.address(a) == Self.address(b) && Self.address(b) == Self.address(c))
        #expect(await d.transfer(endpoint: SourceSinkDevice.bulkIn, length: SourceSinkDevice.maxTransferLength + 1,
                                 data: nil, streamID: 0).status == .invalid)
    }
}
