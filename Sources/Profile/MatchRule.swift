/// Which physical device an assignment takes: every given field must match;
/// a list matches any of its values (architecture.md).
public struct MatchRule: Sendable, Hashable {
    public var vendors: [UInt16]?
    public var products: [UInt16]?
    public var serial: String?
    /// Bus-port path as the kernel names it: `1-3.2`.
    public var port: String?

    public init(vendors: [UInt16]? = nil, products: [UInt16]? = nil, serial: String? = nil, port: String? = nil) {
        self.vendors = vendors
        self.products = products
        self.serial = serial
        self.port = port
    }

    public var isEmpty: Bool { vendors == nil && products == nil && serial == nil && port == nil }

    public func matches(vendor: UInt16, product: UInt16, serial: String?, port: String?) -> Bool {
        if let vendors, !vendors.contains(vendor) { return false }
        if let products, !products.contains(product) { return false }
        if let wanted = self.serial, wanted != serial { return false }
        if let wanted = self.port, wanted != port { return false }
        return true
    }

    /// True when some device could satisfy both rules: every field both give
    /// must have a value in common; a field only one gives constrains nothing.
    public func overlaps(_ other: MatchRule) -> Bool {
        func compatible<T: Hashable>(_ a: [T]?, _ b: [T]?) -> Bool {
            guard let a, let b else { return true }
            return !Set(a).isDisjoint(with: b)
        }
        return compatible(vendors, other.vendors) && compatible(products, other.products)
            && compatible(serial.map { [$0] }, other.serial.map { [$0] })
            && compatible(port.map { [$0] }, other.port.map { [$0] })
    }

    /// Same set of devices, whatever the order or repetition of list values.
    public func isIdentical(to other: MatchRule) -> Bool { normalized == other.normalized }

    private var normalized: MatchRule {
        MatchRule(vendors: vendors.map { Array(Set($0)).sorted() }, products: products.map { Array(Set($0)).sorted() },
                  serial: serial, port: port)
    }

    /// `1-3.2`: bus number, a dash, then port numbers joined by dots.
    static func isPortPath(_ text: String) -> Bool {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, isNumber(parts[0]) else { return false }
        return parts[1].split(separator: ".", omittingEmptySubsequences: false).allSatisfy(isNumber)
    }

    private static func isNumber(_ text: Substring) -> Bool { !text.isEmpty && text.allSatisfy { $0.isASCII && $0.isNumber } }
}
