import Devices
import Foundation
import Logging
import Profile
import Reconciler
import Testing
import TestSupport

/// A monitor whose device is busy for its first `failures` opens, as a
/// device is while another process or a udev rule still holds it.
final class BusyAtFirstMonitor: USBDeviceMonitor, @unchecked Sendable {
    let devices: [USBDeviceInfo]
    private let lock = NSLock()
    private var failuresLeft: Int
    private(set) var opens = 0

    init(devices: [USBDeviceInfo], failures: Int) {
        self.devices = devices
        failuresLeft = failures
    }

    func presentDevices() async throws -> [USBDeviceInfo] { devices }
    func events() -> AsyncStream<USBDeviceEvent> { AsyncStream { _ in } }
    func open(_ info: USBDeviceInfo) async throws -> any USBDevice {
        let busy = lock.withLock { () -> Bool in
            opens += 1
            failuresLeft -= 1
            return failuresLeft >= 0
        }
        if busy { throw DeviceError.busy("\(info.port) is held by another process") }
        return SourceSinkDevice(serial: info.serial ?? "")
    }
}

/// Issue 10, finding 8: a device that failed to open is retried while it
/// stays plugged (it was never retried before).
@Suite(.serialized, .timeLimit(.minutes(1))) struct DeviceOpenRetryTests {
    @Test func aBusyDeviceIsRetriedWithBackoffUntilItOpens() async throws {
        let monitor = BusyAtFirstMonitor(devices: [device(1, serial: "A", port: "1-1", address: 2)], failures: 2)
        let reconciler = Reconciler(monitor: monitor, environment: [:], logger: Logger(label: "test"))
        let url = try makeTemporaryDirectory("usbredir-retry").appendingPathComponent("lab.yaml")
        try "version: 1\nendpoints:\n  e: {listen: 127.0.0.1:\(freeLoopbackPort())}\ndevices:\n  - {name: a, to: e, match: {serial: \"A\"}}\n"
            .write(to: url, atomically: true, encoding: .utf8)
        await reconciler.apply(try #require(ProfileLoader.load(path: url.path, hostname: "nohost").profile))
        #expect(await reconciler.status().first?.device == nil, "the first open fails")
        let seconds = try await waitFor("the device to be bound after its retries", timeout: 15) {
            await reconciler.status().first?.device == "1234:0001@1-1"
        }
        print("busy device bound after \(String(format: "%.1f", seconds)) s and \(monitor.opens) opens")
        #expect(monitor.opens == 3)
        await reconciler.shutdown()
    }
}
