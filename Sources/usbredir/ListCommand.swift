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
        if json {
            let entries = devices.map(ListedDevice.init)
            print(String(decoding: try JSONEncoder.sortedKeys.encode(["devices": entries]), as: UTF8.self))
            return
        }
        printTable(["BUS", "PORT", "ID", "CLASS", "SPEED", "SERIAL", "MANUFACTURER", "PRODUCT"], devices.map { d in
            let e = ListedDevice(d)
            return ["\(e.bus)", e.port, "\(e.vendor):\(e.product)", e.class, e.speed ?? "-", e.serial ?? "-",
                    e.manufacturer ?? "-", e.productName ?? "-"]
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

    init(_ d: USBDeviceInfo) {
        vendor = Hex.id(d.vendorID)
        product = Hex.id(d.productID)
        `class` = Hex.padded(d.deviceClass, digits: 2)
        serial = d.serial
        manufacturer = d.manufacturer
        productName = d.productName
        bus = d.bus
        port = d.port
        speed = d.speed?.rawValue
    }

    enum CodingKeys: String, CodingKey {
        case vendor, product, `class`, serial, manufacturer, bus, port, speed
        case productName = "product_name"
    }
}

