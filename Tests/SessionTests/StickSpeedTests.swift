import NIOCore
import Testing
@testable import Devices

/// A SuperSpeed stick has a USB 3.0 device descriptor, SuperSpeed endpoint
/// companions and a BOS, so a Linux guest on xhci treats it as a USB 3 disk
/// (1 MiB commands). A high-speed stick (the default) has none of them.
/// A guest enumerating and reading both is shown end to end
/// (VirtualStickEndToEndTests).
@Suite("StickSpeedTests")
struct StickSpeedTests {
    static func descriptor(_ device: MassStorageDevice, type: UInt8, length: UInt16 = 255) async -> [UInt8]? {
        let setup = USBSetupPacket(requestType: 0x80, request: 6, value: UInt16(type) << 8, index: 0, length: length)
        let r = await device.control(setup, data: nil)
        return r.status == .success ? byteArray(r.data) : nil
    }

    @Test func aSuperSpeedStickDescribesItselfAsUSB3() async throws {
        let stick = try MassStorageDevice(imagePath: try makeStickImage(blocks: 64), readOnly: true, serial: "SS",
                                          superSpeed: true)
        #expect(stick.speed == .super)
        let device = try #require(await Self.descriptor(stick, type: 1))
        #expect(device[2] == 0x00 && device[3] == 0x03, "bcdUSB 3.00")
        #expect(device[7] == 9, "ep0 of 2^9 bytes")

        let config = try #require(await Self.descriptor(stick, type: 2))
        #expect(Int(config[2]) | Int(config[3]) << 8 == config.count)
        // interface, then each endpoint (7 bytes) followed by its companion (6 bytes, type 0x30).
        let endpoints = Self.walk(config).filter { $0.type == 5 }
        #expect(endpoints.count == 2)
        for e in endpoints {
            #expect(Int(config[e.offset + 4]) | Int(config[e.offset + 5]) << 8 == 1024)
            let next = e.offset + 7
            #expect(config[next] == 6 && config[next + 1] == 0x30 && config[next + 2] == 15, "companion after endpoint")
        }

        let bos = try #require(await Self.descriptor(stick, type: 15))
        #expect(bos[1] == 15 && Int(bos[2]) | Int(bos[3]) << 8 == bos.count && bos[4] == 2)
        let capabilities = Self.walk(bos).dropFirst().map { bos[$0.offset + 2] }
        #expect(capabilities == [2, 3], "USB 2.0 extension and SuperSpeed capability")
        // A host asking for the BOS header first gets just that.
        #expect(await Self.descriptor(stick, type: 15, length: 5)?.count == 5)
    }

    @Test func aHighSpeedStickHasNoUSB3Descriptors() async throws {
        let stick = try MassStorageDevice(imagePath: try makeStickImage(blocks: 64), readOnly: true, serial: "HS")
        #expect(stick.speed == .high)
        let device = try #require(await Self.descriptor(stick, type: 1))
        #expect(device[2] == 0x00 && device[3] == 0x02 && device[7] == 64)
        let config = try #require(await Self.descriptor(stick, type: 2))
        #expect(!Self.walk(config).contains { $0.type == 0x30 })
        #expect(Self.walk(config).filter { $0.type == 5 }.allSatisfy {
            Int(config[$0.offset + 4]) | Int(config[$0.offset + 5]) << 8 == 512
        })
        #expect(await Self.descriptor(stick, type: 15) == nil, "BOS stalls")
    }

    /// The descriptors inside a descriptor set: (offset, type) by bLength.
    static func walk(_ bytes: [UInt8]) -> [(offset: Int, type: UInt8)] {
        var out: [(Int, UInt8)] = []
        var i = 0
        while i + 1 < bytes.count, bytes[i] > 0 {
            out.append((i, bytes[i + 1]))
            i += Int(bytes[i])
        }
        return out
    }
}
