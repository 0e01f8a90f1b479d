import Common

/// Why a device could not be opened or used (every backend, physical and virtual).
public enum DeviceError: Error, Sendable, Equatable, CustomStringConvertible {
    case io(String)
    case busy(String)
    case notFound(String)
    case access(String)

    /// The text of a permission refusal: which node, which device, why, and
    /// what to do. "cannot open /dev/bus/usb/001/003 (1-1.1 0951:1666):
    /// permission denied; add the user to group usbredir ...".
    public static func permissionDenied(_ info: USBDeviceInfo) -> String {
        "cannot open \(info.nodePath) (\(info.port) \(Hex.id(info.vendorID)):\(Hex.id(info.productID))): permission denied; "
            + "add the user to group \(accessGroup) (udev rule \(udevRule)), see usbredir(1)"
    }

    /// The group dist/70-usbredir.rules gives read-write access to USB devices.
    public static let accessGroup = "usbredir"
    public static let udevRule = "70-usbredir.rules"

    public var description: String {
        switch self {
        case .io(let s), .busy(let s), .notFound(let s), .access(let s): s
        }
    }
}
