import Devices
import USBRedirProtocol

/// The messages that present a device to the VM: interface_info, ep_info,
/// device_connect (in that order; QEMU needs the first two before the last).
enum DeviceAnnouncement {
    static func interfaceInfo(_ config: USBConfigurationDescriptor?) -> USBRedirMessage {
        let interfaces = config?.interfaces ?? []
        return .interfaceInfo(.init(
            interfaceCount: UInt32(interfaces.count),
            interface: interfaces.map(\.number),
            interfaceClass: interfaces.map(\.interfaceClass),
            interfaceSubclass: interfaces.map(\.interfaceSubclass),
            interfaceProtocol: interfaces.map(\.interfaceProtocol)))
    }

    static func epInfo(_ config: USBConfigurationDescriptor?, maxPacketSize0: UInt8) -> USBRedirMessage {
        let n = USBRedirLimits.endpointCount
        var type = [UInt8](repeating: USBRedirEndpointType.invalid.rawValue, count: n)
        var interval = [UInt8](repeating: 0, count: n)
        var interface = [UInt8](repeating: 0, count: n)
        var mps = [UInt16](repeating: 0, count: n)
        var streams = [UInt32](repeating: 0, count: n)
        for control in [0, 16] {
            type[control] = USBRedirEndpointType.control.rawValue
            mps[control] = UInt16(maxPacketSize0)
        }
        for i in config?.interfaces ?? [] {
            for e in i.endpoints {
                let idx = usbRedirEndpointIndex(e.address)
                type[idx] = e.type.rawValue
                interval[idx] = e.interval
                interface[idx] = i.number
                mps[idx] = e.maxPacketSize
                streams[idx] = e.maxStreams
            }
        }
        return .epInfo(.init(type: type, interval: interval, interface: interface,
                             maxPacketSize: mps, maxStreams: streams))
    }

    static func deviceConnect(_ device: any USBDevice) -> USBRedirMessage {
        let d = device.descriptor
        return .deviceConnect(.init(
            speed: WireValues.speed(device.speed).rawValue, deviceClass: d.deviceClass,
            deviceSubclass: d.deviceSubclass, deviceProtocol: d.deviceProtocol,
            vendorID: d.vendorID, productID: d.productID, deviceVersionBCD: d.deviceVersion))
    }

    static func all(_ device: any USBDevice) async -> [USBRedirMessage] {
        let config = await device.activeConfiguration
        return [interfaceInfo(config), epInfo(config, maxPacketSize0: device.descriptor.maxPacketSize0),
                deviceConnect(device)]
    }

    /// Does the device have isochronous endpoints? (Its traffic is never compressed.)
    static func hasIsochronous(_ config: USBConfigurationDescriptor?) -> Bool {
        config?.interfaces.contains { $0.endpoints.contains { $0.type == .isochronous } } ?? false
    }
}
