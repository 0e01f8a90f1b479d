import CLibUSB
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// libusb's transfer statuses and error codes in USB terms. The session
/// maps `USBTransferStatus` to usbredir statuses; this is the one place
/// that knows libusb's numbers.
enum LibUSBStatus {
    /// A finished asynchronous transfer (libusb_transfer_status).
    static func transfer(_ status: libusb_transfer_status) -> USBTransferStatus {
        switch status {
        case LIBUSB_TRANSFER_COMPLETED: .success
        case LIBUSB_TRANSFER_STALL: .stall
        case LIBUSB_TRANSFER_TIMED_OUT: .timeout
        case LIBUSB_TRANSFER_OVERFLOW: .babble
        case LIBUSB_TRANSFER_CANCELLED: .cancelled
        case LIBUSB_TRANSFER_NO_DEVICE: .noDevice
        default: .ioError      // LIBUSB_TRANSFER_ERROR and anything newer
        }
    }

    /// A negative libusb_error from a synchronous call or a failed submit.
    static func error(_ code: Int32) -> USBTransferStatus {
        switch code {
        case 0...: .success
        case LIBUSB_ERROR_PIPE.rawValue: .stall
        case LIBUSB_ERROR_NO_DEVICE.rawValue: .noDevice
        case LIBUSB_ERROR_TIMEOUT.rawValue: .timeout
        case LIBUSB_ERROR_OVERFLOW.rawValue: .babble
        case LIBUSB_ERROR_INTERRUPTED.rawValue: .cancelled
        // A bad endpoint, interface or parameter: the request, not the device, is wrong.
        case LIBUSB_ERROR_INVALID_PARAM.rawValue, LIBUSB_ERROR_NOT_FOUND.rawValue,
             LIBUSB_ERROR_NOT_SUPPORTED.rawValue: .invalid
        default: .ioError
        }
    }

    /// A failure to open or claim, as `DeviceError` (design.md: a device
    /// another process holds is reported busy, not stolen).
    static func deviceError(_ code: Int32, _ what: String) -> DeviceError {
        let message = "\(what): \(name(code))"
        switch code {
        case LIBUSB_ERROR_BUSY.rawValue: return .busy(message)
        case LIBUSB_ERROR_ACCESS.rawValue: return .access(message)
        case LIBUSB_ERROR_NO_DEVICE.rawValue, LIBUSB_ERROR_NOT_FOUND.rawValue: return .notFound(message)
        default: return .io(message)
        }
    }

    /// A failed libusb_open. A permission refusal names the node and the
    /// fix, since it is what a first run without root meets (usbredir(1),
    /// "Running without root").
    static func openError(_ code: Int32, _ info: USBDeviceInfo) -> DeviceError {
        guard code == LIBUSB_ERROR_ACCESS.rawValue else { return deviceError(code, "open \(info.port)") }
        return .access(DeviceError.permissionDenied(info))
    }

    /// A usbfs node that open(2) refused (`HotplugSource.kernel` opens
    /// nodes itself), as libusb_open would have reported it.
    static func nodeOpenError(_ code: Int32, _ info: USBDeviceInfo) -> DeviceError {
        switch code {
        case EACCES, EPERM: .access(DeviceError.permissionDenied(info))
        case ENOENT, ENODEV, ENXIO: .notFound("open \(info.nodePath) (\(info.port)): no such device")
        case EBUSY: .busy("open \(info.nodePath) (\(info.port)): busy")
        default: .io("open \(info.nodePath) (\(info.port)): errno \(code)")
        }
    }

    static func name(_ code: Int32) -> String {
        String(cString: libusb_error_name(code))
    }
}
