import Common
/// usbredir filter rules, the `class,vendor,product,version,allow` strings
/// joined by `|` that filter_filter carries (usbredirfilter.h); -1 is "any".
public struct USBRedirFilterRule: Sendable, Hashable {
    public var deviceClass: Int
    public var vendorID: Int
    public var productID: Int
    public var deviceVersionBCD: Int
    public var allow: Bool

    public init(deviceClass: Int = -1, vendorID: Int = -1, productID: Int = -1,
                deviceVersionBCD: Int = -1, allow: Bool) {
        self.deviceClass = deviceClass
        self.vendorID = vendorID
        self.productID = productID
        self.deviceVersionBCD = deviceVersionBCD
        self.allow = allow
    }

    var isValid: Bool {
        (-1...255).contains(deviceClass) && (-1...0xffff).contains(vendorID)
            && (-1...0xffff).contains(productID) && (-1...0xffff).contains(deviceVersionBCD)
    }

    func matches(class cls: UInt8, vendor: UInt16, product: UInt16, version: UInt16) -> Bool {
        (deviceClass == -1 || deviceClass == Int(cls)) && (vendorID == -1 || vendorID == Int(vendor))
            && (productID == -1 || productID == Int(product))
            && (deviceVersionBCD == -1 || deviceVersionBCD == Int(version))
    }
}

public struct USBRedirFilterError: Error, Sendable, Equatable, CustomStringConvertible {
    public var rule: String
    public var reason: String
    public var description: String { "invalid filter rule \"\(rule)\": \(reason)" }
}

/// What usbredirfilter_check answers for a device.
public enum USBRedirFilterVerdict: Sendable, Equatable {
    case allowed
    case denied      // a matching rule says deny (-EPERM)
    case noMatch     // some pass matched no rule (-ENOENT)
}

public enum USBRedirFilter {
    /// Parses rules as usbredirfilter_string_to_rules does: separators are byte
    /// sets used as strtok uses them (runs of them, leading or trailing ones,
    /// make no empty rules or tokens), the string ends at its first NUL, and
    /// numbers are C integers as strtol(.., 0) reads them (leading white space,
    /// sign, 0x.. hex, 0.. octal). Numbers outside `int` are rejected: the C
    /// library would silently truncate them (0xffffffff becoming -1, "any").
    public static func parse(_ string: String, tokenSeparators: String = ",",
                             ruleSeparators: String = "|") throws(USBRedirFilterError) -> [USBRedirFilterRule] {
        let tokenSeps = Set(tokenSeparators.utf8), ruleSeps = Set(ruleSeparators.utf8)
        let bytes = string.utf8.prefix { $0 != 0 }
        var rules: [USBRedirFilterRule] = []
        for raw in bytes.split(whereSeparator: { ruleSeps.contains($0) }) {
            let text = String(decoding: raw, as: UTF8.self)
            let fields = raw.split(whereSeparator: { tokenSeps.contains($0) })
            guard fields.count == 5 else {
                throw USBRedirFilterError(rule: text, reason: "expected 5 fields, found \(fields.count)")
            }
            var values: [Int] = []
            for f in fields {
                guard let v = parseCInteger(f), (Int(Int32.min)...Int(Int32.max)).contains(v) else {
                    throw USBRedirFilterError(rule: text, reason: "\"\(String(decoding: f, as: UTF8.self))\" is not a number")
                }
                values.append(v)
            }
            let rule = USBRedirFilterRule(deviceClass: values[0], vendorID: values[1], productID: values[2],
                                          deviceVersionBCD: values[3], allow: values[4] != 0)
            guard rule.isValid else { throw USBRedirFilterError(rule: text, reason: "value out of range") }
            rules.append(rule)
        }
        return rules
    }

    /// Prints rules as usbredirfilter_rules_to_string does.
    public static func format(_ rules: [USBRedirFilterRule], tokenSeparator: String = ",",
                              ruleSeparator: String = "|") -> String {
        rules.map { r in
            [hex(r.deviceClass, digits: 2), hex(r.vendorID, digits: 4), hex(r.productID, digits: 4),
             hex(r.deviceVersionBCD, digits: 4), r.allow ? "1" : "0"].joined(separator: tokenSeparator)
        }.joined(separator: ruleSeparator)
    }

    /// Checks a device as usbredirfilter_check does: one pass for the device
    /// class (skipped for 0x00 and 0xef), then one per interface (non-boot
    /// HID interfaces of multi-interface devices skipped unless all are).
    public static func check(_ rules: [USBRedirFilterRule], deviceClass: UInt8,
                             interfaceClasses: [(cls: UInt8, subclass: UInt8, proto: UInt8)],
                             vendor: UInt16, product: UInt16, version: UInt16,
                             defaultAllow: Bool = false, dontSkipNonBootHID: Bool = false) -> USBRedirFilterVerdict {
        func pass(_ cls: UInt8) -> USBRedirFilterVerdict {
            guard let rule = rules.first(where: { $0.matches(class: cls, vendor: vendor, product: product, version: version) })
            else { return defaultAllow ? .allowed : .noMatch }
            return rule.allow ? .allowed : .denied
        }
        if deviceClass != 0x00 && deviceClass != 0xef {
            let v = pass(deviceClass)
            if v != .allowed { return v }
        }
        var skipped = 0
        for i in interfaceClasses {
            if !dontSkipNonBootHID && interfaceClasses.count > 1 && i.cls == 0x03 && i.subclass == 0 && i.proto == 0 {
                skipped += 1
                continue
            }
            let v = pass(i.cls)
            if v != .allowed { return v }
        }
        if skipped > 0 && skipped == interfaceClasses.count {
            return pass(interfaceClasses[0].cls)
        }
        return .allowed
    }

    private static func hex(_ v: Int, digits: Int) -> String {
        v == -1 ? "-1" : "0x" + Hex.padded(v, digits: digits)
    }

    /// strtol(s, &end, 0) that must consume the whole token: C-locale white
    /// space first, an optional sign, then digits in base 16 (0x/0X), 8
    /// (leading 0) or 10. nil when no digits, a stray character, or Int overflow.
    static func parseCInteger<Bytes: Collection<UInt8>>(_ token: Bytes) -> Int? {
        var s = token.drop { $0 == 0x20 || (0x09...0x0d).contains($0) }[...]
        var negative = false
        if let c = s.first, c == UInt8(ascii: "-") || c == UInt8(ascii: "+") {
            negative = c == UInt8(ascii: "-")
            s = s.dropFirst()
        }
        var radix = 10
        if s.starts(with: [UInt8(ascii: "0"), UInt8(ascii: "x")]) || s.starts(with: [UInt8(ascii: "0"), UInt8(ascii: "X")]) {
            radix = 16
            s = s.dropFirst(2)
        } else if s.first == UInt8(ascii: "0") {
            radix = 8
        }
        guard !s.isEmpty else { return nil }
        var value = 0
        for c in s {
            let digit: Int
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = Int(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = Int(c - UInt8(ascii: "a")) + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = Int(c - UInt8(ascii: "A")) + 10
            default: return nil
            }
            guard digit < radix else { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: radix)
            let (a, o2) = m.addingReportingOverflow(digit)
            if o1 || o2 { return nil }
            value = a
        }
        return negative ? -value : value
    }
}
