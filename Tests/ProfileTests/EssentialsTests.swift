import Common
import Testing

/// Common's stand-in for Foundation's trimmingCharacters(in:), used where
/// only FoundationEssentials is imported (the binary links no more).
@Suite struct EssentialsTests {
    @Test func trimsLikeFoundation() {
        #expect(" \tC = XX \t".trimmingCharacters(in: TrimmedCharacters.whitespaces) == "C = XX")
        #expect("\n a \r\n".trimmingCharacters(in: TrimmedCharacters.whitespaces) == "\n a \r\n")
        #expect("\n a \r\n".trimmingCharacters(in: TrimmedCharacters.whitespacesAndNewlines) == "a")
        #expect("   ".trimmingCharacters(in: TrimmedCharacters.whitespaces) == "")
        #expect("x=y".split(separator: "=")[1].trimmingCharacters(in: TrimmedCharacters.whitespaces) == "y")
    }
}
