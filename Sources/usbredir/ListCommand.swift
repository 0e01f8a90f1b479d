import Common
import ArgumentParser
import Devices
import Foundation

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
            print(String(decoding: try JSONEncoder.status.encode(["devices": entries]), as: UTF8.self))
            return
        }
        printTable(["BUS", "PORT", "ID", "CLASS", "SPEED", "SERIAL", "MANUFACTURER", "PRODUCT"], devices.map { d in
            let e = ListedDevice(d)
            return ["\(e.bus)", e.port, "\(e.vendor):\(e.product)", e.class, e.speed ?? "-", e.serial ?? "-",
                    e.manufacturer ?? "-", e.productName ?? "-"]
        })
    }
}

/// One device in `list --json` (design.md).
struct ListedDevice: Codable {
    var vendor: String
    var product: String
    var `class`: String
    var serial: String?
    var manufacturer: String?
    var productName: String?
    var bus: Int
    var port: String
    var speed: String?

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

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(vendor, forKey: .vendor)
        try c.encode(product, forKey: .product)
        try c.encode(`class`, forKey: .class)
        try c.encode(serial, forKey: .serial)
        try c.encode(manufacturer, forKey: .manufacturer)
        try c.encode(productName, forKey: .productName)
        try c.encode(bus, forKey: .bus)
        try c.encode(port, forKey: .port)
        try c.encode(speed, forKey: .speed)
    }
}

