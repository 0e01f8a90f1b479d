import Common
import ArgumentParser
import Devices
import Reconciler
#if canImport(FoundationEssentials)
import FoundationEssentials   // not Foundation: no ICU in the binary (issue 21)
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the USB devices present, without opening any of them.")

    @Flag(help: "Print {\"devices\": [...]} as JSON.")
    var json = false

    func run() async throws {
        let devices = try await DeviceMonitors.system().presentDevices()
        let hostUse = HostUse().reasons(for: devices)
        if json {
            let entries = devices.map { ListedDevice($0, hostUse: hostUse[$0.port]) }
            print(String(decoding: try JSONEncoder.sortedKeys.encode(["devices": entries]), as: UTF8.self))
            return
        }
        printTable(["BUS", "PORT", "ID", "CLASS", "SPEED", "SERIAL", "MANUFACTURER", "PRODUCT", "HOST USE"], devices.map { d in
            let e = ListedDevice(d, hostUse: hostUse[d.port])
            return ["\(e.bus)", e.port, "\(e.vendor):\(e.product)", e.class, e.speed ?? "-", e.serial ?? "-",
                    e.manufacturer ?? "-", e.productName ?? "-", e.inUseByHost ?? "-"]
        })
    }
}

/// One device in `list --json` (architecture.md).
struct ListedDevice: Codable {
    var vendor: String
    var product: String
    var `class`: String
    @NullWhenAbsent var serial: String?
    @NullWhenAbsent var manufacturer: String?
    @NullWhenAbsent var productName: String?
    var bus: Int
    var port: String
    @NullWhenAbsent var speed: String?
    /// Why the host itself uses it ("/dev/sdb1 mounted on /mnt"): rules
    /// without `take-from-host` leave it alone.
    @NullWhenAbsent var inUseByHost: String?

    init(_ d: USBDeviceInfo, hostUse: String?) {
        vendor = Hex.id(d.vendorID)
        product = Hex.id(d.productID)
        `class` = Hex.padded(d.deviceClass, digits: 2)
        serial = d.serial
        manufacturer = d.manufacturer
        productName = d.productName
        bus = d.bus
        port = d.port
        speed = d.speed?.rawValue
        inUseByHost = hostUse
    }

    enum CodingKeys: String, CodingKey {
        case vendor, product, `class`, serial, manufacturer, bus, port, speed
        case productName = "product_name", inUseByHost = "in_use_by_host"
    }
}

