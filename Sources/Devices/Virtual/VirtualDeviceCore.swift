import NIOCore

/// What every virtual device shares: its descriptors, configuration and
/// alt-setting state, halted endpoints, and the standard control requests
/// (USB 2.0, 9.4) answered from the descriptor model.
public struct VirtualDeviceCore: Sendable {
    let descriptor: USBDeviceDescriptor
    let configuration: USBConfigurationDescriptor
    /// A virtual device starts configured, as a host-side driver would leave it.
    var configurationValue: UInt8
    var altSettings: [UInt8: UInt8] = [:]
    var halted: Set<UInt8> = []

    /// USB 3.0 descriptors: endpoint companions and a BOS.
    let superSpeed: Bool

    init(descriptor: USBDeviceDescriptor, configuration: USBConfigurationDescriptor, superSpeed: Bool = false) {
        self.descriptor = descriptor
        self.configuration = configuration
        self.configurationValue = configuration.value
        self.superSpeed = superSpeed
    }

    var activeConfiguration: USBConfigurationDescriptor? {
        guard configurationValue == configuration.value else { return nil }
        var c = configuration
        c.interfaces = configuration.active(alt: altSettings)
        return c
    }

    func endpoint(_ address: UInt8) -> USBEndpointDescriptor? {
        activeConfiguration?.interfaces.lazy.flatMap(\.endpoints).first { $0.address == address }
    }

    mutating func setConfiguration(_ value: UInt8) -> USBTransferStatus {
        guard value == 0 || value == configuration.value else { return .stall }
        configurationValue = value
        altSettings = [:]
        halted = []
        return .success
    }

    mutating func setAltSetting(interface: UInt8, alt: UInt8) -> USBTransferStatus {
        guard configuration.interfaces.contains(where: { $0.number == interface && $0.alternateSetting == alt })
        else { return .stall }
        altSettings[interface] = alt
        return .success
    }

    mutating func reset() {
        halted = []
        altSettings = [:]
        configurationValue = configuration.value
    }

    /// Answers a standard request, or nil when the request is not a standard
    /// one (class and vendor requests belong to the device).
    mutating func standardControl(_ s: USBSetupPacket) -> USBTransferResult? {
        guard s.type == 0 else { return nil }
        switch (s.request, s.isIn) {
        case (6, true):     // GET_DESCRIPTOR
            guard let bytes = descriptorBytes(type: UInt8(s.value >> 8), index: UInt8(s.value & 0xff)) else {
                return .failed(.stall)
            }
            return .inData(ByteBuffer(bytes: bytes.prefix(Int(s.length))))
        case (0, true):     // GET_STATUS
            let halt: UInt8 = s.recipient == 2 && halted.contains(UInt8(s.index & 0xff)) ? 1 : 0
            return .inData(ByteBuffer(bytes: [halt, 0].prefix(Int(s.length))))
        case (1, false), (3, false):    // CLEAR_FEATURE, SET_FEATURE
            if s.recipient == 2 && s.value == 0 {   // ENDPOINT_HALT
                let ep = UInt8(s.index & 0xff)
                if s.request == 1 { halted.remove(ep) } else { halted.insert(ep) }
            }
            return .outDone(0)
        case (8, true):     // GET_CONFIGURATION
            return .inData(ByteBuffer(bytes: [configurationValue].prefix(Int(s.length))))
        case (9, false):    // SET_CONFIGURATION
            return .noData(setConfiguration(UInt8(s.value & 0xff)))
        case (10, true):    // GET_INTERFACE
            return .inData(ByteBuffer(bytes: [altSettings[UInt8(s.index & 0xff)] ?? 0].prefix(Int(s.length))))
        case (11, false):   // SET_INTERFACE
            return .noData(setAltSetting(interface: UInt8(s.index & 0xff), alt: UInt8(s.value & 0xff)))
        case (5, false):    // SET_ADDRESS: the host side owns addressing
            return .outDone(0)
        default:
            return .failed(.stall)
        }
    }

    func descriptorBytes(type: UInt8, index: UInt8) -> [UInt8]? {
        switch type {
        case DescriptorEncoding.deviceType: DescriptorEncoding.device(descriptor)
        case DescriptorEncoding.configType:
            index == 0 ? DescriptorEncoding.configuration(configuration, superSpeed: superSpeed) : nil
        case DescriptorEncoding.stringType: DescriptorEncoding.string(index: index, of: descriptor)
        case DescriptorEncoding.bosType: superSpeed ? DescriptorEncoding.superSpeedBOS : nil
        default: nil
        }
    }
}
