/// Every module that imports Common sees FoundationEssentials (Data, Date,
/// URL, String's trimming and searching), as it saw Foundation before:
/// swift-crypto 3 re-exported all of Foundation to whoever imported it or
/// X509, and Transport's code relies on that. swift-crypto 4 imports only
/// FoundationEssentials, which keeps ICU (~30 MB) out of the static binary;
/// this export keeps the layers above compiling unchanged.
#if canImport(FoundationEssentials)
@_exported import FoundationEssentials
#endif

/// `trimmingCharacters(in: .whitespaces)` as Foundation has it, for code
/// that only sees FoundationEssentials (which lacks it, and CharacterSet).
/// Disfavoured: where full Foundation is imported too (tests), Foundation's
/// own is chosen and nothing is ambiguous.
public struct TrimmedCharacters: Sendable {
    let contains: @Sendable (Unicode.Scalar) -> Bool

    /// Space and tab (Unicode's horizontal white space).
    public static let whitespaces = TrimmedCharacters { $0.properties.isWhitespace && !isNewline($0) }
    /// White space and line breaks.
    public static let whitespacesAndNewlines = TrimmedCharacters { $0.properties.isWhitespace || isNewline($0) }

    private static func isNewline(_ u: Unicode.Scalar) -> Bool {
        // Foundation's newlines: U+000A-U+000D, U+0085, U+2028, U+2029.
        (0x0A...0x0D).contains(u.value) || u.value == 0x85 || u.value == 0x2028 || u.value == 0x2029
    }
}

extension StringProtocol {
    @_disfavoredOverload
    public func trimmingCharacters(in set: TrimmedCharacters) -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !set.contains($0) }),
              let last = scalars.lastIndex(where: { !set.contains($0) }) else { return "" }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[first...last])
        return String(out)
    }
}
