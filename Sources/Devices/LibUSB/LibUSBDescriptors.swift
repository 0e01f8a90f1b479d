import CLibUSB

/// libusb's parsed descriptors in the `USBDevice` model's terms. Read from
/// the descriptors the kernel caches (sysfs), so no request reaches the device.
enum LibUSBDescriptors {
    static func device(_ d: libusb_device_descriptor, strings info: USBDeviceInfo?) -> USBDeviceDescriptor {
        var out = USBDeviceDescriptor(vendorID: d.idVendor, productID: d.idProduct)
        out.usbVersion = d.bcdUSB
        out.deviceClass = d.bDeviceClass
        out.deviceSubclass = d.bDeviceSubClass
        out.deviceProtocol = d.bDeviceProtocol
        out.maxPacketSize0 = d.bMaxPacketSize0
        out.deviceVersion = d.bcdDevice
        out.configurationCount = d.bNumConfigurations
        out.manufacturer = info?.manufacturer
        out.product = info?.productName
        out.serial = info?.serial
        return out
    }

    /// Every configuration of `device`, by configuration value.
    static func configurations(of device: OpaquePointer, context: OpaquePointer, count: UInt8) -> [UInt8: USBConfigurationDescriptor] {
        var out: [UInt8: USBConfigurationDescriptor] = [:]
        for index in 0..<count {
            var config: UnsafeMutablePointer<libusb_config_descriptor>?
            guard libusb_get_config_descriptor(device, index, &config) == 0, let config else { continue }
            defer { libusb_free_config_descriptor(config) }
            let c = configuration(config.pointee, context: context)
            out[c.value] = c
        }
        return out
    }

    static func configuration(_ c: libusb_config_descriptor, context: OpaquePointer) -> USBConfigurationDescriptor {
        var interfaces: [USBInterfaceDescriptor] = []
        for i in 0..<Int(c.bNumInterfaces) {
            let interface = c.interface[i]
            for a in 0..<Int(interface.num_altsetting) {
                let alt = interface.altsetting[a]
                let endpoints = (0..<Int(alt.bNumEndpoints)).map { endpoint(alt.endpoint[$0], context: context) }
                interfaces.append(USBInterfaceDescriptor(
                    number: alt.bInterfaceNumber, alternateSetting: alt.bAlternateSetting,
                    interfaceClass: alt.bInterfaceClass, interfaceSubclass: alt.bInterfaceSubClass,
                    interfaceProtocol: alt.bInterfaceProtocol, endpoints: endpoints))
            }
        }
        var out = USBConfigurationDescriptor(value: c.bConfigurationValue, interfaces: interfaces)
        out.attributes = c.bmAttributes
        out.maxPowerMilliamps = UInt16(c.MaxPower) * 2    // USB 2 units; good enough for logs
        return out
    }

    static func endpoint(_ e: libusb_endpoint_descriptor, context: OpaquePointer) -> USBEndpointDescriptor {
        let type = USBEndpointType(rawValue: e.bmAttributes & 0x3) ?? .bulk
        var out = USBEndpointDescriptor(address: e.bEndpointAddress, type: type,
                                        maxPacketSize: e.wMaxPacketSize, interval: e.bInterval)
        var companion: UnsafeMutablePointer<libusb_ss_endpoint_companion_descriptor>?
        var copy = e
        if type == .bulk, libusb_get_ss_endpoint_companion_descriptor(context, &copy, &companion) == 0, let companion {
            // USB 3.2, 9.6.7: bmAttributes bits 4:0 of a bulk companion = log2(MaxStreams).
            let exponent = companion.pointee.bmAttributes & 0x1f
            out.maxStreams = exponent == 0 ? 0 : UInt32(1) << UInt32(exponent)
            libusb_free_ss_endpoint_companion_descriptor(companion)
        }
        return out
    }

    /// Bytes one service interval can move: wMaxPacketSize bits 10:0 times
    /// (1 + bits 12:11) extra transactions for high-bandwidth endpoints (USB 2.0, 9.6.6).
    static func bytesPerInterval(_ wMaxPacketSize: UInt16) -> Int {
        Int(wMaxPacketSize & 0x7ff) * (1 + Int((wMaxPacketSize >> 11) & 0x3))
    }
}
