// libFuzzer target: the virtual stick's Bulk-Only Transport and SCSI layer
// (Devices), driven as a guest drives it, over a small temporary image.
//
// Input: the first byte picks the stick (bit 0: read-only; bit 1: UAS at
// SuperSpeed, alt 1 selected), then a sequence of records, each: op byte,
// then its operands.
//   op % 8 == 0: a CBW: flags u8, data length u32 LE, CDB length u8 (1-16),
//                16 CDB bytes (the signature, tag and LUN are filled in)
//   op % 8 == 1: bulk OUT of n bytes (n = u16 LE, bounded by what is left)
//   op % 8 == 2: bulk IN asking for u16 LE bytes
//   op % 8 == 3: a control request: 8 setup bytes (+ data for OUT)
//   op % 8 == 4: reset (as a BOT reset recovery would)
//   op % 8 == 5: clear halt on the endpoint in the next byte
//   op % 8 == 6: a UAS IU on the command pipe: kind u8 (command, task
//                management or raw), tag u8 % 4 + 1, LUN u8, then 16 bytes
//                (the CDB, or the function and task tag)
//   op % 8 == 7: a UAS status, data-in or data-out transfer (u8 % 3) on
//                stream u8 % 5 (0 is invalid), length u16 LE (+ data for
//                OUT); it waits for its command, so it runs beside the rest
//                and the device's close must end it
import Dispatch
import Glibc
import NIOCore

private let imagePath: String = {
    var template = Array("/tmp/usbredir-fuzz-stick-XXXXXX".utf8CString)
    let fd = mkstemp(&template)
    precondition(fd >= 0)
    precondition(ftruncate(fd, 64 * 512) == 0)   // 64 blocks
    close(fd)
    return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}()

private struct Input {
    var bytes: UnsafeBufferPointer<UInt8>
    var at = 0
    var done: Bool { at >= bytes.count }
    mutating func u8() -> UInt8 {
        guard at < bytes.count else { return 0 }
        defer { at += 1 }
        return bytes[at]
    }
    mutating func u16() -> Int { Int(u8()) | Int(u8()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    mutating func take(_ n: Int) -> [UInt8] {
        let k = min(n, bytes.count - at)
        defer { at += k }
        return Array(bytes[at..<(at + k)])
    }
}

/// A UAS IU from the input: well-formed command or task management IUs
/// (tags 1-4, so stream transfers find them), or raw bytes.
private func uasIU(_ input: inout Input) -> ByteBuffer {
    let kind = input.u8() % 3
    let tag = UInt16(input.u8() % 4 + 1)
    let lun = UInt64(input.u8() % 2)
    var body = input.take(16)
    body += [UInt8](repeating: 0, count: 16 - body.count)
    var b = ByteBuffer()
    switch kind {
    case 0:
        b.writeBytes([0x01, 0])
        b.writeInteger(tag)
        b.writeInteger(UInt32(0))
        b.writeInteger(lun)
        b.writeBytes(body)
    case 1:
        b.writeBytes([0x05, 0])
        b.writeInteger(tag)
        b.writeBytes([body[0], 0])
        b.writeInteger(UInt16(body[1] % 4 + 1))
        b.writeBytes(body[4..<12])
    default:
        b.writeBytes(body.prefix(Int(body[0] % 17)))
    }
    return b
}

private func run(_ input: Input) async {
    var input = input
    let mode = input.u8()
    let uas = mode & 2 != 0
    guard let device = try? MassStorageDevice(imagePath: imagePath, readOnly: mode & 1 == 1, serial: "FUZZ",
                                              superSpeed: uas, offersUAS: uas)
    else { fatalError("cannot open the fuzz image") }
    if uas {
        let selected = await device.setAltSetting(interface: 0, alt: 1)
        precondition(selected == .success)
    }
    await withTaskGroup(of: Void.self) { waiting in
        await drive(device, &input, waiting: &waiting)
        // As an assignment ends a device: the image lock goes with the close, not
        // with the last reference (a read ahead still on the pool holds one).
        // The close also ends the UAS transfers still waiting for a command.
        await device.close()
    }
}

private func drive(_ device: MassStorageDevice, _ input: inout Input, waiting: inout TaskGroup<Void>) async {
    var tag: UInt32 = 0
    var steps = 0
    while !input.done && steps < 64 {
        steps += 1
        switch input.u8() % 8 {
        case 0:
            var b = ByteBuffer()
            tag &+= 1
            b.writeInteger(UInt32(0x4342_5355), endianness: .little)
            b.writeInteger(tag, endianness: .little)
            let flags = input.u8()
            b.writeInteger(input.u32(), endianness: .little)
            b.writeInteger(flags)
            b.writeInteger(UInt8(0))
            b.writeInteger(input.u8() % 16 + 1)
            var cdb = input.take(16)
            cdb += [UInt8](repeating: 0, count: 16 - cdb.count)
            b.writeBytes(cdb)
            _ = await device.transfer(endpoint: MassStorageDevice.bulkOut, length: 31, data: b, streamID: 0)
        case 1:
            let data = input.take(input.u16())
            _ = await device.transfer(endpoint: MassStorageDevice.bulkOut, length: data.count,
                                      data: ByteBuffer(bytes: data), streamID: 0)
        case 2:
            let length = input.u16()
            let r = await device.transfer(endpoint: MassStorageDevice.bulkIn, length: length, data: nil, streamID: 0)
            precondition((r.data?.readableBytes ?? 0) <= length, "bulk IN returned more than asked for")
        case 3:
            let s = input.take(8) + [UInt8](repeating: 0, count: 8)
            let setup = USBSetupPacket(requestType: s[0], request: s[1], value: UInt16(s[2]) | UInt16(s[3]) << 8,
                                       index: UInt16(s[4]) | UInt16(s[5]) << 8, length: UInt16(s[6]) | UInt16(s[7]) << 8)
            let data = setup.isIn ? nil : ByteBuffer(bytes: input.take(Int(setup.length)))
            let r = await device.control(setup, data: data)
            if setup.isIn { precondition((r.data?.readableBytes ?? 0) <= Int(setup.length)) }
        case 4:
            _ = await device.reset()
        case 5:
            _ = await device.clearHalt(endpoint: input.u8())
        case 6:
            let iu = uasIU(&input)
            _ = await device.transfer(endpoint: MassStorageDevice.uasCommandPipe, length: iu.readableBytes, data: iu, streamID: 0)
        default:
            let pipe = [MassStorageDevice.uasStatusPipe, MassStorageDevice.uasDataInPipe, MassStorageDevice.uasDataOutPipe][Int(input.u8() % 3)]
            let stream = UInt32(input.u8() % 5)
            let length = input.u16()
            let data = pipe == MassStorageDevice.uasDataOutPipe ? ByteBuffer(bytes: input.take(length)) : nil
            waiting.addTask {
                let r = await device.transfer(endpoint: pipe, length: length, data: data, streamID: stream)
                if data == nil { precondition((r.data?.readableBytes ?? 0) <= length, "UAS IN returned more than asked for") }
            }
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStick(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Input(bytes: UnsafeBufferPointer(start: data, count: size))
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) let i = input
    Task.detached {
        await run(i)
        done.signal()
    }
    done.wait()
    return 0
}
