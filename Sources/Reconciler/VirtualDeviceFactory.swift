import Devices
import Profile

/// Builds the virtual device of an assignment.
enum VirtualDeviceFactory {
    static func make(_ v: VirtualDevice, assignment name: String) throws -> any USBDevice {
        switch v.kind {
        case .massStorage:
            guard let image = v.image else { throw DeviceError.notFound("mass-storage device '\(name)' has no image") }
            return try MassStorageDevice(imagePath: image, readOnly: v.readOnly, serial: serial(for: name))
        case .sourceSink:
            return SourceSinkDevice(serial: serial(for: name))
        }
    }

    /// A serial number derived from the assignment name: stable across runs
    /// and unique per profile (FNV-1a, 48 bits, hex).
    static func serial(for name: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        let hex = String(h & 0xffff_ffff_ffff, radix: 16, uppercase: true)
        return "USBREDIR" + String(repeating: "0", count: 12 - hex.count) + hex
    }

    static func label(_ v: VirtualDevice) -> String { "virtual:\(v.kind.rawValue)" }
}

extension USBDeviceInfo {
    /// `VVVV:PPPP@PORT`, as status shows a physical device.
    var label: String { "\(hex4(vendorID)):\(hex4(productID))@\(port)" }
    /// Identity of a present device for binding: where it is plugged.
    var key: String { "\(bus)-\(port)-\(address)" }
}

func hex4(_ v: UInt16) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 4 - s.count) + s
}
