import Devices
import Logging

/// The process's device monitor: libusb, made once; a machine where libusb
/// cannot start still runs virtual devices (with a warning).
enum DeviceMonitors {
    private static let shared: any USBDeviceMonitor = {
        do {
            return try LibUSBMonitor(logger: Logger(label: "usbredir.libusb"))
        } catch {
            Logger(label: "usbredir").warning("libusb unavailable, physical devices are not seen: \(error)")
            return EmptyUSBMonitor()
        }
    }()

    static func system() -> any USBDeviceMonitor { shared }
}
