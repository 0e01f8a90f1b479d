import CUSBRedirParser
import NIOCore
@testable import USBRedirProtocol

/// A libusbredirparser instance driven from Swift: bytes go in through its
/// read callback, bytes come out through its write callback, and every packet
/// callback is recorded as one of our typed packets (converted field by field
/// from the C header struct, so the comparison with what we sent covers every
/// field the C library hands its user).
final class CParser {
    struct Event: Equatable, CustomStringConvertible {
        /// nil for callbacks that get no id (device_connect, hello, ...).
        var id: UInt64?
        var message: USBRedirMessage
        var description: String { "id \(id.map { String($0) } ?? "-") \(message)" }
    }

    let parser: UnsafeMutablePointer<usbredirparser>
    let role: USBRedirRole
    let version: String
    private var input: [UInt8] = []
    private var inputOffset = 0
    private var output: [UInt8] = []
    private(set) var events: [Event] = []
    /// Messages the library logged at error or warning level.
    private(set) var problems: [String] = []
    private(set) var peerVersion: String?

    /// `role` is the role the C library plays (usbredirparser_fl_usb_host for .host).
    init(role: USBRedirRole, capabilities: USBRedirCapabilities, version: String = "libusbredirparser oracle") {
        parser = usbredirparser_create()!
        self.role = role
        self.version = version
        parser.pointee.priv = Unmanaged.passUnretained(self).toOpaque()
        Self.installCallbacks(parser)
        var caps = [capabilities.rawValue]
        let flags = role == .host ? Int32(usbredirparser_fl_usb_host) : 0
        usbredirparser_init(parser, version, &caps, Int32(caps.count), flags)
    }

    deinit { usbredirparser_destroy(parser) }

    // MARK: Driving

    /// Feeds bytes; returns usbredirparser_do_read's result once it would block.
    @discardableResult
    func feed(_ bytes: some Sequence<UInt8>) -> Int32 {
        input.append(contentsOf: bytes)
        let r = usbredirparser_do_read(parser)
        input.removeFirst(inputOffset)
        inputOffset = 0
        return r
    }

    var unreadByteCount: Int { input.count - inputOffset }

    /// Writes out what the library queued (usbredirparser_do_write).
    func takeOutput() -> [UInt8] {
        _ = usbredirparser_do_write(parser)
        defer { output = [] }
        return output
    }

    func takeEvents() -> [Event] {
        defer { events = [] }
        return events
    }

    func takeProblems() -> [String] {
        defer { problems = [] }
        return problems
    }

    /// The library's own view: both sides have `cap` (after its own cap checks).
    func isActive(_ cap: USBRedirCapability) -> Bool {
        usbredirparser_have_cap(parser, Int32(cap.rawValue)) != 0
            && usbredirparser_peer_has_cap(parser, Int32(cap.rawValue)) != 0
    }

    var hasPeerCaps: Bool { usbredirparser_have_peer_caps(parser) != 0 }

    var peerCapabilities: USBRedirCapabilities {
        USBRedirCapabilities(USBRedirCapability.allCases.filter {
            usbredirparser_peer_has_cap(parser, Int32($0.rawValue)) != 0
        })
    }

    var ourCapabilities: USBRedirCapabilities {
        USBRedirCapabilities(USBRedirCapability.allCases.filter {
            usbredirparser_have_cap(parser, Int32($0.rawValue)) != 0
        })
    }

    // MARK: Sending through the C library

    /// Sends `packet` with the matching usbredirparser_send_* call.
    /// Returns false for the one message the library only sends by itself
    /// (device_disconnect_ack, as the guest's reply to device_disconnect) and hello.
    func send(_ packet: USBRedirPacket) -> Bool {
        let p = parser
        let id = packet.id
        switch packet.message {
        case .hello, .deviceDisconnectAck:
            return false
        case .deviceConnect(let m):
            var h = CConvert.c(m)
            usbredirparser_send_device_connect(p, &h)
        case .deviceDisconnect: usbredirparser_send_device_disconnect(p)
        case .reset: usbredirparser_send_reset(p)
        case .interfaceInfo(let m):
            var h = CConvert.c(m)
            usbredirparser_send_interface_info(p, &h)
        case .epInfo(let m):
            var h = CConvert.c(m)
            usbredirparser_send_ep_info(p, &h)
        case .setConfiguration(let m):
            var h = usb_redir_set_configuration_header(configuration: m.configuration)
            usbredirparser_send_set_configuration(p, id, &h)
        case .getConfiguration: usbredirparser_send_get_configuration(p, id)
        case .configurationStatus(let m):
            var h = usb_redir_configuration_status_header(status: m.status, configuration: m.configuration)
            usbredirparser_send_configuration_status(p, id, &h)
        case .setAltSetting(let m):
            var h = usb_redir_set_alt_setting_header(interface: m.interface, alt: m.alt)
            usbredirparser_send_set_alt_setting(p, id, &h)
        case .getAltSetting(let m):
            var h = usb_redir_get_alt_setting_header(interface: m.interface)
            usbredirparser_send_get_alt_setting(p, id, &h)
        case .altSettingStatus(let m):
            var h = usb_redir_alt_setting_status_header(status: m.status, interface: m.interface, alt: m.alt)
            usbredirparser_send_alt_setting_status(p, id, &h)
        case .startIsoStream(let m):
            var h = usb_redir_start_iso_stream_header(endpoint: m.endpoint, pkts_per_urb: m.packetsPerURB,
                                                      no_urbs: m.urbCount)
            usbredirparser_send_start_iso_stream(p, id, &h)
        case .stopIsoStream(let m):
            var h = usb_redir_stop_iso_stream_header(endpoint: m.endpoint)
            usbredirparser_send_stop_iso_stream(p, id, &h)
        case .isoStreamStatus(let m):
            var h = usb_redir_iso_stream_status_header(status: m.status, endpoint: m.endpoint)
            usbredirparser_send_iso_stream_status(p, id, &h)
        case .startInterruptReceiving(let m):
            var h = usb_redir_start_interrupt_receiving_header(endpoint: m.endpoint)
            usbredirparser_send_start_interrupt_receiving(p, id, &h)
        case .stopInterruptReceiving(let m):
            var h = usb_redir_stop_interrupt_receiving_header(endpoint: m.endpoint)
            usbredirparser_send_stop_interrupt_receiving(p, id, &h)
        case .interruptReceivingStatus(let m):
            var h = usb_redir_interrupt_receiving_status_header(status: m.status, endpoint: m.endpoint)
            usbredirparser_send_interrupt_receiving_status(p, id, &h)
        case .allocBulkStreams(let m):
            var h = usb_redir_alloc_bulk_streams_header(endpoints: m.endpoints, no_streams: m.streamCount)
            usbredirparser_send_alloc_bulk_streams(p, id, &h)
        case .freeBulkStreams(let m):
            var h = usb_redir_free_bulk_streams_header(endpoints: m.endpoints)
            usbredirparser_send_free_bulk_streams(p, id, &h)
        case .bulkStreamsStatus(let m):
            var h = usb_redir_bulk_streams_status_header(endpoints: m.endpoints, no_streams: m.streamCount,
                                                         status: m.status)
            usbredirparser_send_bulk_streams_status(p, id, &h)
        case .cancelDataPacket: usbredirparser_send_cancel_data_packet(p, id)
        case .filterReject: usbredirparser_send_filter_reject(p)
        case .filterFilter(let m):
            // The C API takes parsed rules and prints them itself.
            let rules = try! USBRedirFilter.parse(m.rules).map(CConvert.c)
            rules.withUnsafeBufferPointer { usbredirparser_send_filter_filter(p, $0.baseAddress, Int32($0.count)) }
        case .startBulkReceiving(let m):
            var h = usb_redir_start_bulk_receiving_header(stream_id: m.streamID, bytes_per_transfer: m.bytesPerTransfer,
                                                          endpoint: m.endpoint, no_transfers: m.transferCount)
            usbredirparser_send_start_bulk_receiving(p, id, &h)
        case .stopBulkReceiving(let m):
            var h = usb_redir_stop_bulk_receiving_header(stream_id: m.streamID, endpoint: m.endpoint)
            usbredirparser_send_stop_bulk_receiving(p, id, &h)
        case .bulkReceivingStatus(let m):
            var h = usb_redir_bulk_receiving_status_header(stream_id: m.streamID, endpoint: m.endpoint, status: m.status)
            usbredirparser_send_bulk_receiving_status(p, id, &h)
        case .controlPacket(let m):
            var h = usb_redir_control_packet_header(endpoint: m.endpoint, request: m.request, requesttype: m.requestType,
                                                    status: m.status, value: m.value, index: m.index, length: m.length)
            Self.withData(m.data) { usbredirparser_send_control_packet(p, id, &h, $0, $1) }
        case .bulkPacket(let m):
            var h = usb_redir_bulk_packet_header(endpoint: m.endpoint, status: m.status,
                                                 length: UInt16(truncatingIfNeeded: m.length), stream_id: m.streamID,
                                                 length_high: UInt16(truncatingIfNeeded: m.length >> 16))
            Self.withData(m.data) { usbredirparser_send_bulk_packet(p, id, &h, $0, $1) }
        case .isoPacket(let m):
            var h = usb_redir_iso_packet_header(endpoint: m.endpoint, status: m.status, length: m.length)
            Self.withData(m.data) { usbredirparser_send_iso_packet(p, id, &h, $0, $1) }
        case .interruptPacket(let m):
            var h = usb_redir_interrupt_packet_header(endpoint: m.endpoint, status: m.status, length: m.length)
            Self.withData(m.data) { usbredirparser_send_interrupt_packet(p, id, &h, $0, $1) }
        case .bufferedBulkPacket(let m):
            var h = usb_redir_buffered_bulk_packet_header(stream_id: m.streamID, length: m.length,
                                                          endpoint: m.endpoint, status: m.status)
            Self.withData(m.data) { usbredirparser_send_buffered_bulk_packet(p, id, &h, $0, $1) }
        }
        return true
    }

    private static func withData(_ data: ByteBuffer?, _ body: (UnsafeMutablePointer<UInt8>?, Int32) -> Void) {
        guard var bytes = data?.allBytes, !bytes.isEmpty else { return body(nil, 0) }
        bytes.withUnsafeMutableBufferPointer { body($0.baseAddress, Int32($0.count)) }
    }

    // MARK: Callbacks


    private func record(_ id: UInt64?, _ message: USBRedirMessage) {
        events.append(Event(id: id, message: message))
    }

    /// Copies a data buffer the library hands over, then frees it as documented.
    private func takeData(_ data: UnsafeMutablePointer<UInt8>?, _ length: Int32) -> ByteBuffer? {
        guard let data else {
            if length != 0 { problems.append("data NULL with data_len \(length)") }
            return nil
        }
        defer { usbredirparser_free_packet_data(parser, data) }
        if length == 0 { return nil }
        return ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: Int(length)))
    }

    private static func installCallbacks(_ p: UnsafeMutablePointer<usbredirparser>) {
        p.pointee.log_func = { priv, level, msg in
            let text = msg.map { String(cString: $0) } ?? "?"
            // usbredirparser_verify_caps complains about caps the tests choose on purpose.
            if Int(level) <= usbredirparser_warning && !text.contains("caps contains cap_bulk_streams without") {
                cParser(priv).problems.append(text)
            }
        }
        p.pointee.read_func = { priv, data, count in
            let me = cParser(priv)
            let n = min(Int(count), me.input.count - me.inputOffset)
            guard n > 0, let data else { return 0 }
            me.input.withUnsafeBufferPointer { src in
                data.update(from: src.baseAddress! + me.inputOffset, count: n)
            }
            me.inputOffset += n
            return Int32(n)
        }
        p.pointee.write_func = { priv, data, count in
            cParser(priv).output.append(contentsOf: UnsafeBufferPointer(start: data, count: Int(count)))
            return count
        }
        p.pointee.hello_func = { priv, h in
            let me = cParser(priv)
            me.peerVersion = CConvert.string(h!.pointee.version)
            me.record(nil, .hello(.init(version: me.peerVersion!, capabilities: me.peerCapabilities)))
        }
        p.pointee.device_connect_func = { priv, h in
            let me = cParser(priv)
            me.record(nil, .deviceConnect(CConvert.swift(h!.pointee, me)))
        }
        p.pointee.device_disconnect_func = { priv in cParser(priv).record(nil, .deviceDisconnect) }
        p.pointee.reset_func = { priv in cParser(priv).record(nil, .reset) }
        p.pointee.interface_info_func = { priv, h in
            cParser(priv).record(nil, .interfaceInfo(CConvert.swift(h!.pointee)))
        }
        p.pointee.ep_info_func = { priv, h in
            let me = cParser(priv)
            me.record(nil, .epInfo(CConvert.swift(h!.pointee, me)))
        }
        p.pointee.set_configuration_func = { priv, id, h in
            cParser(priv).record(id, .setConfiguration(.init(configuration: h!.pointee.configuration)))
        }
        p.pointee.get_configuration_func = { priv, id in cParser(priv).record(id, .getConfiguration) }
        p.pointee.configuration_status_func = { priv, id, h in
            let h = h!.pointee
            cParser(priv).record(id, .configurationStatus(.init(status: h.status, configuration: h.configuration)))
        }
        p.pointee.set_alt_setting_func = { priv, id, h in
            let h = h!.pointee
            cParser(priv).record(id, .setAltSetting(.init(interface: h.interface, alt: h.alt)))
        }
        p.pointee.get_alt_setting_func = { priv, id, h in
            cParser(priv).record(id, .getAltSetting(.init(interface: h!.pointee.interface)))
        }
        p.pointee.alt_setting_status_func = { priv, id, h in
            let h = h!.pointee
            cParser(priv).record(id, .altSettingStatus(.init(status: h.status, interface: h.interface, alt: h.alt)))
        }
        p.pointee.start_iso_stream_func = { priv, id, h in
            let h = h!.pointee
            cParser(priv).record(id, .startIsoStream(.init(endpoint: h.endpoint, packetsPerURB: h.pkts_per_urb,
                                                        urbCount: h.no_urbs)))
        }
        p.pointee.stop_iso_stream_func = { priv, id, h in
            cParser(priv).record(id, .stopIsoStream(.init(endpoint: h!.pointee.endpoint)))
        }
        p.pointee.iso_stream_status_func = { priv, id, h in
            let h = h!.pointee
            cParser(priv).record(id, .isoStreamStatus(.init(status: h.status, endpoint: h.endpoint)))
        }
        p.pointee.start_interrupt_receiving_func = { priv, id, h in
            cParser(priv).record(id, .startInterruptReceiving(.init(endpoint: h!.pointee.endpoint)))
        }
        p.pointee.stop_interrupt_receiving_func = { priv, id, h in
            cParser(priv).record(id, .stopInterruptReceiving(.init(endpoint: h!.pointee.endpoint)))
        }
        p.pointee.interrupt_receiving_status_func = { priv, id, h in
            let h = h!.pointee
            cParser(priv).record(id, .interruptReceivingStatus(.init(status: h.status, endpoint: h.endpoint)))
        }
        p.pointee.alloc_bulk_streams_func = { priv, id, h in
            let h = h!.pointee
            cParser(priv).record(id, .allocBulkStreams(.init(endpoints: h.endpoints, streamCount: h.no_streams)))
        }
        p.pointee.free_bulk_streams_func = { priv, id, h in
            cParser(priv).record(id, .freeBulkStreams(.init(endpoints: h!.pointee.endpoints)))
        }
        p.pointee.bulk_streams_status_func = { priv, id, h in
            let h = h!.pointee
            cParser(priv).record(id, .bulkStreamsStatus(.init(endpoints: h.endpoints, streamCount: h.no_streams,
                                                           status: h.status)))
        }
        p.pointee.cancel_data_packet_func = { priv, id in cParser(priv).record(id, .cancelDataPacket) }
        p.pointee.filter_reject_func = { priv in cParser(priv).record(nil, .filterReject) }
        p.pointee.filter_filter_func = { priv, rules, count in
            // The library hands over the parsed rules (ownership included).
            let parsed = (0..<Int(count)).map { CConvert.swift(rules![$0]) }
            usbredirfilter_free(rules)
            cParser(priv).record(nil, .filterFilter(.init(rules: USBRedirFilter.format(parsed))))
        }
        p.pointee.device_disconnect_ack_func = { priv in cParser(priv).record(nil, .deviceDisconnectAck) }
        p.pointee.start_bulk_receiving_func = { priv, id, h in
            let h = h!.pointee
            cParser(priv).record(id, .startBulkReceiving(.init(streamID: h.stream_id, bytesPerTransfer: h.bytes_per_transfer,
                                                            endpoint: h.endpoint, transferCount: h.no_transfers)))
        }
        p.pointee.stop_bulk_receiving_func = { priv, id, h in
            let h = h!.pointee
            cParser(priv).record(id, .stopBulkReceiving(.init(streamID: h.stream_id, endpoint: h.endpoint)))
        }
        p.pointee.bulk_receiving_status_func = { priv, id, h in
            let h = h!.pointee
            cParser(priv).record(id, .bulkReceivingStatus(.init(streamID: h.stream_id, endpoint: h.endpoint,
                                                             status: h.status)))
        }
        p.pointee.control_packet_func = { priv, id, h, data, len in
            let me = cParser(priv), h = h!.pointee
            me.record(id, .controlPacket(.init(endpoint: h.endpoint, request: h.request, requestType: h.requesttype,
                                               status: h.status, value: h.value, index: h.index, length: h.length,
                                               data: me.takeData(data, len))))
        }
        p.pointee.bulk_packet_func = { priv, id, h, data, len in
            let me = cParser(priv), h = h!.pointee
            // length_high is only meaningful with 32bits_bulk_length (the library zeroes it otherwise).
            let high = me.isActive(.bulkLength32Bit) ? UInt32(h.length_high) << 16 : 0
            me.record(id, .bulkPacket(.init(endpoint: h.endpoint, status: h.status, length: UInt32(h.length) | high,
                                            streamID: h.stream_id, data: me.takeData(data, len))))
        }
        p.pointee.iso_packet_func = { priv, id, h, data, len in
            let me = cParser(priv), h = h!.pointee
            me.record(id, .isoPacket(.init(endpoint: h.endpoint, status: h.status, length: h.length,
                                           data: me.takeData(data, len))))
        }
        p.pointee.interrupt_packet_func = { priv, id, h, data, len in
            let me = cParser(priv), h = h!.pointee
            me.record(id, .interruptPacket(.init(endpoint: h.endpoint, status: h.status, length: h.length,
                                                 data: me.takeData(data, len))))
        }
        p.pointee.buffered_bulk_packet_func = { priv, id, h, data, len in
            let me = cParser(priv), h = h!.pointee
            me.record(id, .bufferedBulkPacket(.init(streamID: h.stream_id, length: h.length, endpoint: h.endpoint,
                                                    status: h.status, data: me.takeData(data, len))))
        }
    }
}

/// Field-by-field conversions between the C header structs and our messages.
/// The 32-entry arrays are tuples in Swift; they are read and written as raw
/// bytes at their C offsets (the structs are packed; Swift imports that layout).
enum CConvert {
    static func string<T>(_ tuple: T) -> String {
        withUnsafeBytes(of: tuple) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    static func array<T, E: FixedWidthInteger>(_ tuple: T, _: E.Type) -> [E] {
        withUnsafeBytes(of: tuple) { raw in
            (0..<raw.count / MemoryLayout<E>.size).map {
                E(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<E>.size, as: E.self))
            }
        }
    }

    static func fill<T, E: FixedWidthInteger>(_ tuple: inout T, _ values: [E]) {
        withUnsafeMutableBytes(of: &tuple) { raw in
            precondition(values.count * MemoryLayout<E>.size == raw.count)
            for (i, v) in values.enumerated() {
                raw.storeBytes(of: v.littleEndian, toByteOffset: i * MemoryLayout<E>.size, as: E.self)
            }
        }
    }

    /// What the callback sees; device_version_bcd is only valid with connect_device_version.
    static func swift(_ h: usb_redir_device_connect_header, _ c: CParser) -> USBRedirMessage.DeviceConnect {
        .init(speed: h.speed, deviceClass: h.device_class, deviceSubclass: h.device_subclass,
              deviceProtocol: h.device_protocol, vendorID: h.vendor_id, productID: h.product_id,
              deviceVersionBCD: c.isActive(.connectDeviceVersion) ? h.device_version_bcd : 0)
    }

    static func c(_ m: USBRedirMessage.DeviceConnect) -> usb_redir_device_connect_header {
        usb_redir_device_connect_header(speed: m.speed, device_class: m.deviceClass, device_subclass: m.deviceSubclass,
                                        device_protocol: m.deviceProtocol, vendor_id: m.vendorID,
                                        product_id: m.productID, device_version_bcd: m.deviceVersionBCD)
    }

    static func swift(_ h: usb_redir_interface_info_header) -> USBRedirMessage.InterfaceInfo {
        .init(interfaceCount: h.interface_count, interface: array(h.interface, UInt8.self),
              interfaceClass: array(h.interface_class, UInt8.self),
              interfaceSubclass: array(h.interface_subclass, UInt8.self),
              interfaceProtocol: array(h.interface_protocol, UInt8.self))
    }

    static func c(_ m: USBRedirMessage.InterfaceInfo) -> usb_redir_interface_info_header {
        var h = usb_redir_interface_info_header()
        h.interface_count = m.interfaceCount
        fill(&h.interface, m.interface)
        fill(&h.interface_class, m.interfaceClass)
        fill(&h.interface_subclass, m.interfaceSubclass)
        fill(&h.interface_protocol, m.interfaceProtocol)
        return h
    }

    /// max_packet_size / max_streams are only valid with their capabilities.
    static func swift(_ h: usb_redir_ep_info_header, _ c: CParser) -> USBRedirMessage.EPInfo {
        .init(type: array(h.type, UInt8.self), interval: array(h.interval, UInt8.self),
              interface: array(h.interface, UInt8.self),
              maxPacketSize: c.isActive(.epInfoMaxPacketSize) ? array(h.max_packet_size, UInt16.self) : [],
              maxStreams: c.isActive(.bulkStreams) ? array(h.max_streams, UInt32.self) : [])
    }

    static func c(_ m: USBRedirMessage.EPInfo) -> usb_redir_ep_info_header {
        var h = usb_redir_ep_info_header()
        fill(&h.type, m.type)
        fill(&h.interval, m.interval)
        fill(&h.interface, m.interface)
        fill(&h.max_packet_size, m.maxPacketSize)
        fill(&h.max_streams, m.maxStreams)
        return h
    }

    static func swift(_ r: usbredirfilter_rule) -> USBRedirFilterRule {
        USBRedirFilterRule(deviceClass: Int(r.device_class), vendorID: Int(r.vendor_id), productID: Int(r.product_id),
                           deviceVersionBCD: Int(r.device_version_bcd), allow: r.allow != 0)
    }

    static func c(_ r: USBRedirFilterRule) -> usbredirfilter_rule {
        usbredirfilter_rule(device_class: Int32(r.deviceClass), vendor_id: Int32(r.vendorID),
                            product_id: Int32(r.productID), device_version_bcd: Int32(r.deviceVersionBCD),
                            allow: r.allow ? 1 : 0)
    }
}

/// The CParser behind a callback's priv pointer (a free function: C callbacks capture nothing).
private func cParser(_ priv: UnsafeMutableRawPointer?) -> CParser {
    Unmanaged<CParser>.fromOpaque(priv!).takeUnretainedValue()
}
