import Devices
import NIOConcurrencyHelpers

/// Every device the process has open, reachable without going through the
/// (possibly busy) runners: a second SIGTERM closes them all at once, so
/// kernel drivers are re-attached even when a clean stop hangs.
public final class OpenDevices: Sendable {
    private let devices = NIOLockedValueBox<[ObjectIdentifier: any USBDevice]>([:])

    public init() {}

    func add(_ device: any USBDevice) { devices.withLockedValue { $0[ObjectIdentifier(device)] = device } }
    func remove(_ device: any USBDevice) { devices.withLockedValue { $0[ObjectIdentifier(device)] = nil } }

    public var count: Int { devices.withLockedValue { $0.count } }

    /// Closes every open device, each bounded by `seconds`, in parallel.
    public func closeAll(within seconds: Double) async {
        let all = devices.withLockedValue { d in defer { d = [:] }; return Array(d.values) }
        _ = await completes(within: seconds) {
            await withTaskGroup(of: Void.self) { group in
                for device in all { group.addTask { await device.close() } }
            }
        }
    }
}
