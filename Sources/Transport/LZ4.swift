import CLZ4
import NIOCore

/// LZ4 block compression for SPICEVMC COMPRESSED_DATA (liblz4).
enum LZ4 {
    /// Compressed bytes, or nil when compression would not make it smaller.
    static func compress(_ input: ByteBuffer) -> ByteBuffer? {
        let count = input.readableBytes
        guard count > 0 else { return nil }
        let bound = Int(LZ4_compressBound(Int32(count)))
        guard bound > 0 else { return nil }
        var out = ByteBuffer()
        let written = input.withUnsafeReadableBytes { src in
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { dst in
                Int(LZ4_compress_default(src.baseAddress!.assumingMemoryBound(to: CChar.self),
                                         dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                         Int32(count), Int32(dst.count)))
            }
        }
        return written > 0 && written < count ? out : nil
    }

    /// Decompresses a block that must expand to exactly `size` bytes.
    static func decompress(_ input: ByteBuffer, size: Int) throws -> ByteBuffer {
        guard size > 0, size <= Spice.maxMessageSize else {
            throw TransportError.protocolViolation("LZ4 frame claims \(size) bytes")
        }
        guard input.readableBytes > 0 else { throw TransportError.protocolViolation("empty LZ4 frame") }
        var out = ByteBuffer()
        let produced = input.withUnsafeReadableBytes { src in
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { dst in
                max(0, Int(LZ4_decompress_safe(src.baseAddress!.assumingMemoryBound(to: CChar.self),
                                               dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                               Int32(src.count), Int32(size))))
            }
        }
        guard produced == size else {
            throw TransportError.protocolViolation("LZ4 frame decoded to \(produced) bytes, expected \(size)")
        }
        return out
    }
}

/// Compress only while it pays: a stick's data (filesystem images, media)
/// often does not shrink, and trying costs a pass over every large reply.
/// After `giveUpAfter` tries in a row that saved less than an eighth, only
/// one message in `probeEvery` is tried, so data that turns compressible
/// (a text file after a video) is noticed again.
struct AdaptiveCompression: Sendable {
    static let giveUpAfter = 4
    static let probeEvery = 64
    private var misses = 0
    private var skipped = 0

    mutating func shouldTry() -> Bool {
        guard misses >= Self.giveUpAfter else { return true }
        skipped += 1
        guard skipped >= Self.probeEvery else { return false }
        skipped = 0
        return true
    }

    mutating func record(shrank: Bool) {
        misses = shrank ? 0 : misses + 1
    }
}
