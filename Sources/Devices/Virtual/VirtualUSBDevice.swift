import NIOCore

/// A device modelled in this process. Its descriptors, configuration and
/// standard requests live in a `VirtualDeviceCore`; these default methods
/// forward the configuration side of `USBDevice` to it, so each virtual
/// device writes only what is its own (class requests, transfers).
public protocol VirtualUSBDevice: USBDevice, Actor {
    var core: VirtualDeviceCore { get set }
}

extension VirtualUSBDevice {
    public var activeConfiguration: USBConfigurationDescriptor? { core.activeConfiguration }
    public func open() async throws {}
    public func setConfiguration(_ value: UInt8) async -> USBTransferStatus { core.setConfiguration(value) }
    public func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus {
        core.setAltSetting(interface: interface, alt: alt)
    }
    public func altSetting(interface: UInt8) async -> UInt8? { core.altSettings[interface] ?? 0 }
    public func clearHalt(endpoint: UInt8) async -> USBTransferStatus {
        core.halted.remove(endpoint)
        return .success
    }
    /// A virtual device answers control requests from its own state (no
    /// I/O), so whenever it allows answers at once (`mayAnswerAtOnce`).
    public func controlAtOnce(_ setup: USBSetupPacket, data: ByteBuffer?) async -> USBTransferResult? {
        await control(setup, data: data)
    }
    /// Neither virtual device has isochronous endpoints.
    public func isoTransfer(endpoint: UInt8, length: Int, data: ByteBuffer?) async -> USBTransferResult {
        .failed(.invalid)
    }
}
