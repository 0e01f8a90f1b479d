/// Why a usbredir stream (or a message we were asked to write) is invalid.
/// A parser that throws one of these has failed for good: the connection
/// must be closed, as its framing can no longer be trusted.
public enum USBRedirProtocolError: Error, Sendable, Equatable {
    case unknownType(UInt32)
    case wrongDirection(USBRedirMessageType, sender: USBRedirRole)
    case missingCapability(USBRedirMessageType, USBRedirCapability)
    case helloExpectedFirst(USBRedirMessageType)
    case duplicateHello
    case lengthShorterThanHeader(USBRedirMessageType, length: UInt32, headerLength: Int)
    case unexpectedData(USBRedirMessageType, dataLength: Int)
    case dataTooLong(USBRedirMessageType, length: UInt64, limit: Int)
    case dataLengthMismatch(USBRedirMessageType, declared: UInt32, actual: Int)
    case invalidField(USBRedirMessageType, String)
    case idTooLarge(UInt64)
}

extension USBRedirProtocolError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .unknownType(let t): "unknown usbredir packet type \(t)"
        case .wrongDirection(let t, let s): "\(t) may not be sent by the usb-\(s)"
        case .missingCapability(let t, let c): "\(t) needs capability \(c), which is not active"
        case .helloExpectedFirst(let t): "\(t) received before hello"
        case .duplicateHello: "second hello received"
        case .lengthShorterThanHeader(let t, let l, let h): "\(t) length \(l) is shorter than its \(h)-byte header"
        case .unexpectedData(let t, let n): "\(t) carries \(n) bytes of data in a direction without data"
        case .dataTooLong(let t, let l, let limit): "\(t) length \(l) exceeds the limit of \(limit) bytes"
        case .dataLengthMismatch(let t, let d, let a): "\(t) declares \(d) bytes but carries \(a)"
        case .invalidField(let t, let why): "\(t): \(why)"
        case .idTooLarge(let id): "id \(id) does not fit a 32-bit id header"
        }
    }
}
