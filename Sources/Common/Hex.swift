/// Fixed-width lowercase hexadecimal, as USB ids are written everywhere in
/// this tool (`0525:a4a5`, list's "vendor": "0525", filter rules "0x0525").
public enum Hex {
    /// `value` in lowercase hex, zero-padded to at least `digits` digits.
    public static func padded<T: BinaryInteger>(_ value: T, digits: Int) -> String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - s.count)) + s
    }

    /// A 16-bit USB id as four hex digits: `0x525` -> `0525`.
    public static func id(_ value: UInt16) -> String { padded(value, digits: 4) }
}
