#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Checking libusb's device list against the bus as sysfs shows it.
///
/// With udevd, the process's libusb context keeps its list from udevd's
/// events alone. Should udevd stop delivering them after apply started
/// (killed, restarted by an upgrade, stuck), the list goes stale: a device
/// plugged meanwhile is never seen, one unplugged is still listed. sysfs is
/// the kernel's own view, so each listing compares the two; when they
/// differ the bus is listed afresh, as without udevd, and a device the
/// context does not know is opened through its usbfs node.
extension LibUSBMonitor {
    /// One present device: where it is, and its address there (a device
    /// that came back at the same port has a new one).
    struct PortAddress: Hashable {
        var port: String
        var address: Int
    }

    /// Devices under `sysfs` (`1-3.2`; root hubs and interfaces left out)
    /// with their `devnum`; a device whose attribute cannot be read (it is
    /// leaving) is left out too.
    static func sysfsPresent(_ sysfs: String) -> Set<PortAddress> {
        var present = Set<PortAddress>()
        for name in HostUse.entries(sysfs, type: Int(DT_LNK), Int(DT_DIR)) where HostUse.isUSBDevice(name) {
            if let n = readAttributeFile("\(sysfs)/\(name)/devnum").flatMap({ Int($0) }) {
                present.insert(PortAddress(port: name, address: n))
            }
        }
        return present
    }

    /// Whether libusb's list is the bus sysfs shows. A device plugged a
    /// moment ago may be in sysfs before udevd's event reaches libusb: that
    /// listing is made afresh too, which finds it all the same.
    static func listAgrees(_ listed: [USBDeviceInfo], sysfs: String) -> Bool {
        Set(listed.map { PortAddress(port: $0.port, address: $0.address) }) == sysfsPresent(sysfs)
    }
}
