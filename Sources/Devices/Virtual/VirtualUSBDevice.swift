import NIOCore

/// A device modelled in this process. Its descriptors, configuration and
/// standard requests live in a `VirtualDeviceCore`, which the device keeps
/// behind its own lock (it answers in its caller's turn, from any thread);
/// these default methods forward the configuration side of `USBDevice` to
/// it, so each virtual device writes only what is its own (class requests,
/// transfers).
public protocol VirtualUSBDevice: USBDevice {
    /// Runs `body` on the device's core under the device's lock.
    func withCore<T>(_ body: (inout VirtualDeviceCore) -> T) -> T
}

extension VirtualUSBDevice {
    public var activeConfiguration: USBConfigurationDescriptor? { withCore { $0.activeConfiguration } }
    public func open() async throws {}
    public func setConfiguration(_ value: UInt8) async -> USBTransferStatus { withCore { $0.setConfiguration(value) } }
    public func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus {
        withCore { $0.setAltSetting(interface: interface, alt: alt) }
    }
    public func altSetting(interface: UInt8) async -> UInt8? { withCore { $0.altSettings[interface] ?? 0 } }
    public func clearHalt(endpoint: UInt8) async -> USBTransferStatus {
        withCore { _ = $0.halted.remove(endpoint) }
        return .success
    }
}
