import NIOCore

/// Standard descriptor bytes (USB 2.0, 9.6) from the descriptor model, as a
/// virtual device answers GET_DESCRIPTOR.
enum DescriptorEncoding {
    static let deviceType: UInt8 = 1, configType: UInt8 = 2, stringType: UInt8 = 3
    static let interfaceType: UInt8 = 4, endpointType: UInt8 = 5
    static let bosType: UInt8 = 15, capabilityType: UInt8 = 16, companionType: UInt8 = 48

    /// String indexes: 1 manufacturer, 2 product, 3 serial (0 = none).
    static func device(_ d: USBDeviceDescriptor) -> [UInt8] {
        var b: [UInt8] = [18, deviceType]
        b += le16(d.usbVersion)
        b += [d.deviceClass, d.deviceSubclass, d.deviceProtocol, d.maxPacketSize0]
        b += le16(d.vendorID) + le16(d.productID) + le16(d.deviceVersion)
        b += [d.manufacturer == nil ? 0 : 1, d.product == nil ? 0 : 2, d.serial == nil ? 0 : 3, d.configurationCount]
        return b
    }

    /// With `superSpeed`, each endpoint is followed by its SuperSpeed
    /// companion (USB 3.2, 9.6.7): bulk endpoints burst 16 packets and state
    /// their streams (as a power of two). Class-specific descriptors come last.
    static func configuration(_ c: USBConfigurationDescriptor, superSpeed: Bool = false) -> [UInt8] {
        var body: [UInt8] = []
        let interfaceCount = Set(c.interfaces.map(\.number)).count
        for i in c.interfaces {
            body += [9, interfaceType, i.number, i.alternateSetting, UInt8(i.endpoints.count),
                     i.interfaceClass, i.interfaceSubclass, i.interfaceProtocol, 0]
            for e in i.endpoints {
                body += [7, endpointType, e.address, e.type.rawValue] + le16(e.maxPacketSize) + [e.interval]
                if superSpeed {
                    let streams = UInt8(e.maxStreams > 1 ? e.maxStreams.trailingZeroBitCount : 0)
                    body += e.type == .bulk ? [6, companionType, 15, streams, 0, 0] : [6, companionType, 0, 0, 0, 0]
                }
                body += e.classSpecific
            }
        }
        let total = UInt16(9 + body.count)
        return [9, configType] + le16(total)
            + [UInt8(interfaceCount), c.value, 0, c.attributes, UInt8(min(255, c.maxPowerMilliamps / 2))] + body
    }

    /// The BOS of a SuperSpeed device (USB 3.2, 9.6.2): a USB 2.0 extension
    /// (no LPM: nothing to save on a virtual link) and the SuperSpeed capability (full, high and super supported).
    static let superSpeedBOS: [UInt8] = {
        let usb2Extension: [UInt8] = [7, capabilityType, 2, 0, 0, 0, 0]
        let superSpeed: [UInt8] = [10, capabilityType, 3, 0, 0x0e, 0, 1, 0x0a, 0xff, 0x07]
        let total = 5 + usb2Extension.count + superSpeed.count
        return [5, bosType] + le16(UInt16(total)) + [2] + usb2Extension + superSpeed
    }()

    /// String descriptor `index` (0 = the language list: US English).
    static func string(index: UInt8, of d: USBDeviceDescriptor) -> [UInt8]? {
        if index == 0 { return [4, stringType, 0x09, 0x04] }
        let text: String?
        switch index {
        case 1: text = d.manufacturer
        case 2: text = d.product
        case 3: text = d.serial
        default: text = nil
        }
        guard let text else { return nil }
        let units = Array(text.utf16.prefix(126))
        return [UInt8(2 + 2 * units.count), stringType] + units.flatMap { le16($0) }
    }

    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }
}
