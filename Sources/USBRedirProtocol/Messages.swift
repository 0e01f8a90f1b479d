import NIOCore

/// One usbredir packet: an id (echoed in replies) and a typed message.
public struct USBRedirPacket: Sendable, Equatable {
    public var id: UInt64
    public var message: USBRedirMessage

    public init(id: UInt64 = 0, _ message: USBRedirMessage) {
        self.id = id
        self.message = message
    }
}

/// Every usbredir message, with the fields its type-specific header carries.
/// Data packets carry their payload as a ByteBuffer slice (no copy on parse).
public enum USBRedirMessage: Sendable, Equatable {
    case hello(Hello)
    case deviceConnect(DeviceConnect)
    case deviceDisconnect
    case reset
    case interfaceInfo(InterfaceInfo)
    case epInfo(EPInfo)
    case setConfiguration(SetConfiguration)
    case getConfiguration
    case configurationStatus(ConfigurationStatus)
    case setAltSetting(SetAltSetting)
    case getAltSetting(GetAltSetting)
    case altSettingStatus(AltSettingStatus)
    case startIsoStream(StartIsoStream)
    case stopIsoStream(StopIsoStream)
    case isoStreamStatus(IsoStreamStatus)
    case startInterruptReceiving(StartInterruptReceiving)
    case stopInterruptReceiving(StopInterruptReceiving)
    case interruptReceivingStatus(InterruptReceivingStatus)
    case allocBulkStreams(AllocBulkStreams)
    case freeBulkStreams(FreeBulkStreams)
    case bulkStreamsStatus(BulkStreamsStatus)
    case cancelDataPacket
    case filterReject
    case filterFilter(FilterFilter)
    case deviceDisconnectAck
    case startBulkReceiving(StartBulkReceiving)
    case stopBulkReceiving(StopBulkReceiving)
    case bulkReceivingStatus(BulkReceivingStatus)
    case controlPacket(ControlPacket)
    case bulkPacket(BulkPacket)
    case isoPacket(IsoPacket)
    case interruptPacket(InterruptPacket)
    case bufferedBulkPacket(BufferedBulkPacket)
}

extension USBRedirMessage {
    public struct Hello: Sendable, Equatable {
        public var version: String
        public var capabilities: USBRedirCapabilities
        public init(version: String, capabilities: USBRedirCapabilities) {
            self.version = version
            self.capabilities = capabilities
        }
    }

    public struct DeviceConnect: Sendable, Equatable {
        public var speed: UInt8
        public var deviceClass: UInt8
        public var deviceSubclass: UInt8
        public var deviceProtocol: UInt8
        public var vendorID: UInt16
        public var productID: UInt16
        /// Sent only when connect_device_version is active; 0 otherwise.
        public var deviceVersionBCD: UInt16
        public init(speed: UInt8, deviceClass: UInt8, deviceSubclass: UInt8, deviceProtocol: UInt8,
                    vendorID: UInt16, productID: UInt16, deviceVersionBCD: UInt16) {
            self.speed = speed
            self.deviceClass = deviceClass
            self.deviceSubclass = deviceSubclass
            self.deviceProtocol = deviceProtocol
            self.vendorID = vendorID
            self.productID = productID
            self.deviceVersionBCD = deviceVersionBCD
        }
    }

    /// Interfaces of the active configuration; each array has 32 entries on the wire.
    public struct InterfaceInfo: Sendable, Equatable {
        public var interfaceCount: UInt32
        public var interface: [UInt8]
        public var interfaceClass: [UInt8]
        public var interfaceSubclass: [UInt8]
        public var interfaceProtocol: [UInt8]
        public init(interfaceCount: UInt32, interface: [UInt8], interfaceClass: [UInt8],
                    interfaceSubclass: [UInt8], interfaceProtocol: [UInt8]) {
            self.interfaceCount = interfaceCount
            self.interface = interface.padded(to: USBRedirLimits.maxInterfaces)
            self.interfaceClass = interfaceClass.padded(to: USBRedirLimits.maxInterfaces)
            self.interfaceSubclass = interfaceSubclass.padded(to: USBRedirLimits.maxInterfaces)
            self.interfaceProtocol = interfaceProtocol.padded(to: USBRedirLimits.maxInterfaces)
        }
    }

    /// Endpoint table indexed by usbRedirEndpointIndex; 32 entries each.
    /// maxPacketSize travels only with ep_info_max_packet_size, maxStreams
    /// only with bulk_streams; otherwise they read back as 0.
    public struct EPInfo: Sendable, Equatable {
        public var type: [UInt8]
        public var interval: [UInt8]
        public var interface: [UInt8]
        public var maxPacketSize: [UInt16]
        public var maxStreams: [UInt32]
        public init(type: [UInt8], interval: [UInt8], interface: [UInt8],
                    maxPacketSize: [UInt16], maxStreams: [UInt32]) {
            self.type = type.padded(to: USBRedirLimits.endpointCount, with: USBRedirEndpointType.invalid.rawValue)
            self.interval = interval.padded(to: USBRedirLimits.endpointCount)
            self.interface = interface.padded(to: USBRedirLimits.endpointCount)
            self.maxPacketSize = maxPacketSize.padded(to: USBRedirLimits.endpointCount)
            self.maxStreams = maxStreams.padded(to: USBRedirLimits.endpointCount)
        }
    }

    public struct SetConfiguration: Sendable, Equatable {
        public var configuration: UInt8
        public init(configuration: UInt8) { self.configuration = configuration }
    }

    public struct ConfigurationStatus: Sendable, Equatable {
        public var status: UInt8
        public var configuration: UInt8
        public init(status: UInt8, configuration: UInt8) {
            self.status = status
            self.configuration = configuration
        }
    }

    public struct SetAltSetting: Sendable, Equatable {
        public var interface: UInt8
        public var alt: UInt8
        public init(interface: UInt8, alt: UInt8) {
            self.interface = interface
            self.alt = alt
        }
    }

    public struct GetAltSetting: Sendable, Equatable {
        public var interface: UInt8
        public init(interface: UInt8) { self.interface = interface }
    }

    public struct AltSettingStatus: Sendable, Equatable {
        public var status: UInt8
        public var interface: UInt8
        public var alt: UInt8
        public init(status: UInt8, interface: UInt8, alt: UInt8) {
            self.status = status
            self.interface = interface
            self.alt = alt
        }
    }

    public struct StartIsoStream: Sendable, Equatable {
        public var endpoint: UInt8
        public var packetsPerURB: UInt8
        public var urbCount: UInt8
        public init(endpoint: UInt8, packetsPerURB: UInt8, urbCount: UInt8) {
            self.endpoint = endpoint
            self.packetsPerURB = packetsPerURB
            self.urbCount = urbCount
        }
    }

    public struct StopIsoStream: Sendable, Equatable {
        public var endpoint: UInt8
        public init(endpoint: UInt8) { self.endpoint = endpoint }
    }

    public struct IsoStreamStatus: Sendable, Equatable {
        public var status: UInt8
        public var endpoint: UInt8
        public init(status: UInt8, endpoint: UInt8) {
            self.status = status
            self.endpoint = endpoint
        }
    }

    public struct StartInterruptReceiving: Sendable, Equatable {
        public var endpoint: UInt8
        public init(endpoint: UInt8) { self.endpoint = endpoint }
    }

    public struct StopInterruptReceiving: Sendable, Equatable {
        public var endpoint: UInt8
        public init(endpoint: UInt8) { self.endpoint = endpoint }
    }

    public struct InterruptReceivingStatus: Sendable, Equatable {
        public var status: UInt8
        public var endpoint: UInt8
        public init(status: UInt8, endpoint: UInt8) {
            self.status = status
            self.endpoint = endpoint
        }
    }

    public struct AllocBulkStreams: Sendable, Equatable {
        /// Bitmask of endpoint indexes.
        public var endpoints: UInt32
        public var streamCount: UInt32
        public init(endpoints: UInt32, streamCount: UInt32) {
            self.endpoints = endpoints
            self.streamCount = streamCount
        }
    }

    public struct FreeBulkStreams: Sendable, Equatable {
        public var endpoints: UInt32
        public init(endpoints: UInt32) { self.endpoints = endpoints }
    }

    public struct BulkStreamsStatus: Sendable, Equatable {
        public var endpoints: UInt32
        public var streamCount: UInt32
        public var status: UInt8
        public init(endpoints: UInt32, streamCount: UInt32, status: UInt8) {
            self.endpoints = endpoints
            self.streamCount = streamCount
            self.status = status
        }
    }

    /// The filter rules string, without its terminating NUL (added on the wire).
    public struct FilterFilter: Sendable, Equatable {
        public var rules: String
        public init(rules: String) { self.rules = rules }
    }

    public struct StartBulkReceiving: Sendable, Equatable {
        public var streamID: UInt32
        public var bytesPerTransfer: UInt32
        public var endpoint: UInt8
        public var transferCount: UInt8
        public init(streamID: UInt32, bytesPerTransfer: UInt32, endpoint: UInt8, transferCount: UInt8) {
            self.streamID = streamID
            self.bytesPerTransfer = bytesPerTransfer
            self.endpoint = endpoint
            self.transferCount = transferCount
        }
    }

    public struct StopBulkReceiving: Sendable, Equatable {
        public var streamID: UInt32
        public var endpoint: UInt8
        public init(streamID: UInt32, endpoint: UInt8) {
            self.streamID = streamID
            self.endpoint = endpoint
        }
    }

    public struct BulkReceivingStatus: Sendable, Equatable {
        public var streamID: UInt32
        public var endpoint: UInt8
        public var status: UInt8
        public init(streamID: UInt32, endpoint: UInt8, status: UInt8) {
            self.streamID = streamID
            self.endpoint = endpoint
            self.status = status
        }
    }

    /// A control transfer: the setup packet, a status, and data in the data
    /// direction only (OUT request from the guest, IN reply from the host).
    public struct ControlPacket: Sendable, Equatable {
        public var endpoint: UInt8
        public var request: UInt8
        public var requestType: UInt8
        public var status: UInt8
        public var value: UInt16
        public var index: UInt16
        public var length: UInt16
        public var data: ByteBuffer?
        public init(endpoint: UInt8, request: UInt8, requestType: UInt8, status: UInt8,
                    value: UInt16, index: UInt16, length: UInt16, data: ByteBuffer? = nil) {
            self.endpoint = endpoint
            self.request = request
            self.requestType = requestType
            self.status = status
            self.value = value
            self.index = index
            self.length = length
            self.data = data
        }
    }

    /// A bulk transfer. `length` is 32 bits wide when bulk_length_32bit is
    /// active (sent as length + length_high), else at most 65535.
    public struct BulkPacket: Sendable, Equatable {
        public var endpoint: UInt8
        public var status: UInt8
        public var length: UInt32
        public var streamID: UInt32
        public var data: ByteBuffer?
        public init(endpoint: UInt8, status: UInt8, length: UInt32, streamID: UInt32, data: ByteBuffer? = nil) {
            self.endpoint = endpoint
            self.status = status
            self.length = length
            self.streamID = streamID
            self.data = data
        }
    }

    public struct IsoPacket: Sendable, Equatable {
        public var endpoint: UInt8
        public var status: UInt8
        public var length: UInt16
        public var data: ByteBuffer?
        public init(endpoint: UInt8, status: UInt8, length: UInt16, data: ByteBuffer? = nil) {
            self.endpoint = endpoint
            self.status = status
            self.length = length
            self.data = data
        }
    }

    public struct InterruptPacket: Sendable, Equatable {
        public var endpoint: UInt8
        public var status: UInt8
        public var length: UInt16
        public var data: ByteBuffer?
        public init(endpoint: UInt8, status: UInt8, length: UInt16, data: ByteBuffer? = nil) {
            self.endpoint = endpoint
            self.status = status
            self.length = length
            self.data = data
        }
    }

    public struct BufferedBulkPacket: Sendable, Equatable {
        public var streamID: UInt32
        public var length: UInt32
        public var endpoint: UInt8
        public var status: UInt8
        public var data: ByteBuffer?
        public init(streamID: UInt32, length: UInt32, endpoint: UInt8, status: UInt8, data: ByteBuffer? = nil) {
            self.streamID = streamID
            self.length = length
            self.endpoint = endpoint
            self.status = status
            self.data = data
        }
    }
}

extension Array where Element: FixedWidthInteger {
    /// Fixed-size wire arrays: pad with `filler`, or cut, to exactly `count`.
    func padded(to count: Int, with filler: Element = 0) -> [Element] {
        if self.count == count { return self }
        if self.count > count { return Array(self.prefix(count)) }
        return self + Array(repeating: filler, count: count - self.count)
    }
}
