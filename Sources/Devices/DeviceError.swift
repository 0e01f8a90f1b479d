/// Why a device could not be opened or used (every backend, physical and virtual).
public enum DeviceError: Error, Sendable, Equatable, CustomStringConvertible {
    case io(String)
    case busy(String)
    case notFound(String)
    case access(String)

    public var description: String {
        switch self {
        case .io(let s), .busy(let s), .notFound(let s), .access(let s): s
        }
    }
}
