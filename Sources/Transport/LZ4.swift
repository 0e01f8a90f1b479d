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
