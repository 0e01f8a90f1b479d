import Devices
import NIOCore

/// Stands in for a device that is gone, so replies can still be built.
final class NoDevice: USBDevice {
    static let shared = NoDevice()
    let descriptor = USBDeviceDescriptor(vendorID: 0, productID: 0)
    let speed = USBSpeed.full
    var activeConfiguration: USBConfigurationDescriptor? { nil }
    func open() async throws {}
    func close() async {}
    func setConfiguration(_ value: UInt8) async -> USBTransferStatus { .noDevice }
    func setAltSetting(interface: UInt8, alt: UInt8) async -> USBTransferStatus { .noDevice }
    func altSetting(interface: UInt8) async -> UInt8? { nil }
    func reset() async -> USBTransferStatus { .noDevice }
    func clearHalt(endpoint: UInt8) async -> USBTransferStatus { .noDevice }
    func submit(_ request: USBTransferRequest,
                completion: @escaping USBTransferCompletion) -> (any USBCancellableTransfer)? {
        completion(.failed(.noDevice))
        return nil
    }
}
