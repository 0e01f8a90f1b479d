import Common
import Devices
import Profile

/// Builds the virtual device of an assignment.
enum VirtualDeviceFactory {
    static func make(_ v: VirtualDevice, assignment name: String) throws -> any USBDevice {
        switch v.kind {
        case .massStorage:
            guard let image = v.image else { throw DeviceError.notFound("mass-storage device '\(name)' has no image") }
            return try MassStorageDevice(imagePath: image, readOnly: v.readOnly, serial: serial(for: name),
                                          superSpeed: v.speed == .super, offersUAS: v.uas)
        case .sourceSink:
            return SourceSinkDevice(serial: serial(for: name))
        }
    }

    /// A serial number derived from the assignment name: stable across runs
    /// and unique per profile (FNV-1a, 48 bits, hex).
    static func serial(for name: String) -> String {
        "USBREDIR" + Hex.padded(FNV1a.hash(name.utf8) & 0xffff_ffff_ffff, digits: 12).uppercased()
    }

    static func label(_ v: VirtualDevice) -> String { "virtual:\(v.kind.rawValue)" }
}
