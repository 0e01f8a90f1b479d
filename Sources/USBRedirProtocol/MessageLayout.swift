/// Who may send a message type, and how long its type-specific header is.
/// One table, as usbredir's C parser keeps it, instead of scattered switches.
public struct USBRedirMessageLayout: Sendable {
    public enum Sender: Sendable { case host, guest, either }

    public let sender: Sender
    /// Header length with no capability that changes it.
    public let baseLength: Int
    /// May the packet carry data after its header?
    public let carriesData: Bool

    public func canBeSent(by role: USBRedirRole) -> Bool {
        switch sender {
        case .either: return true
        case .host: return role == .host
        case .guest: return role == .guest
        }
    }

    /// Header length once capabilities are negotiated.
    public func headerLength(of type: USBRedirMessageType, _ negotiation: USBRedirNegotiation) -> Int {
        switch type {
        case .deviceConnect:
            return negotiation.isActive(.connectDeviceVersion) ? 10 : 8
        case .epInfo:
            if negotiation.isActive(.bulkStreams) { return 288 }
            return negotiation.isActive(.epInfoMaxPacketSize) ? 160 : 96
        case .bulkPacket:
            return negotiation.isActive(.bulkLength32Bit) ? 10 : 8
        default:
            return baseLength
        }
    }

    /// The capability both sides must have for the message to be valid at all.
    public static func requiredCapability(_ type: USBRedirMessageType) -> USBRedirCapability? {
        switch type {
        case .filterReject, .filterFilter: return .filter
        case .deviceDisconnectAck: return .deviceDisconnectAck
        case .startBulkReceiving, .stopBulkReceiving, .bulkReceivingStatus, .bufferedBulkPacket:
            return .bulkReceiving
        default: return nil
        }
    }

    public static func of(_ type: USBRedirMessageType) -> USBRedirMessageLayout {
        table[type]!
    }

    private static let table: [USBRedirMessageType: USBRedirMessageLayout] = [
        .hello: .init(sender: .either, baseLength: 64, carriesData: true),
        .deviceConnect: .init(sender: .host, baseLength: 8, carriesData: false),
        .deviceDisconnect: .init(sender: .host, baseLength: 0, carriesData: false),
        .reset: .init(sender: .guest, baseLength: 0, carriesData: false),
        .interfaceInfo: .init(sender: .host, baseLength: 132, carriesData: false),
        .epInfo: .init(sender: .host, baseLength: 96, carriesData: false),
        .setConfiguration: .init(sender: .guest, baseLength: 1, carriesData: false),
        .getConfiguration: .init(sender: .guest, baseLength: 0, carriesData: false),
        .configurationStatus: .init(sender: .host, baseLength: 2, carriesData: false),
        .setAltSetting: .init(sender: .guest, baseLength: 2, carriesData: false),
        .getAltSetting: .init(sender: .guest, baseLength: 1, carriesData: false),
        .altSettingStatus: .init(sender: .host, baseLength: 3, carriesData: false),
        .startIsoStream: .init(sender: .guest, baseLength: 3, carriesData: false),
        .stopIsoStream: .init(sender: .guest, baseLength: 1, carriesData: false),
        .isoStreamStatus: .init(sender: .host, baseLength: 2, carriesData: false),
        .startInterruptReceiving: .init(sender: .guest, baseLength: 1, carriesData: false),
        .stopInterruptReceiving: .init(sender: .guest, baseLength: 1, carriesData: false),
        .interruptReceivingStatus: .init(sender: .host, baseLength: 2, carriesData: false),
        .allocBulkStreams: .init(sender: .guest, baseLength: 8, carriesData: false),
        .freeBulkStreams: .init(sender: .guest, baseLength: 4, carriesData: false),
        .bulkStreamsStatus: .init(sender: .host, baseLength: 9, carriesData: false),
        .cancelDataPacket: .init(sender: .guest, baseLength: 0, carriesData: false),
        .filterReject: .init(sender: .guest, baseLength: 0, carriesData: false),
        .filterFilter: .init(sender: .either, baseLength: 0, carriesData: true),
        .deviceDisconnectAck: .init(sender: .guest, baseLength: 0, carriesData: false),
        .startBulkReceiving: .init(sender: .guest, baseLength: 10, carriesData: false),
        .stopBulkReceiving: .init(sender: .guest, baseLength: 5, carriesData: false),
        .bulkReceivingStatus: .init(sender: .host, baseLength: 6, carriesData: false),
        .controlPacket: .init(sender: .either, baseLength: 10, carriesData: true),
        .bulkPacket: .init(sender: .either, baseLength: 8, carriesData: true),
        .isoPacket: .init(sender: .either, baseLength: 4, carriesData: true),
        .interruptPacket: .init(sender: .either, baseLength: 4, carriesData: true),
        .bufferedBulkPacket: .init(sender: .host, baseLength: 10, carriesData: true),
    ]
}

extension USBRedirMessage {
    public var type: USBRedirMessageType {
        switch self {
        case .hello: .hello
        case .deviceConnect: .deviceConnect
        case .deviceDisconnect: .deviceDisconnect
        case .reset: .reset
        case .interfaceInfo: .interfaceInfo
        case .epInfo: .epInfo
        case .setConfiguration: .setConfiguration
        case .getConfiguration: .getConfiguration
        case .configurationStatus: .configurationStatus
        case .setAltSetting: .setAltSetting
        case .getAltSetting: .getAltSetting
        case .altSettingStatus: .altSettingStatus
        case .startIsoStream: .startIsoStream
        case .stopIsoStream: .stopIsoStream
        case .isoStreamStatus: .isoStreamStatus
        case .startInterruptReceiving: .startInterruptReceiving
        case .stopInterruptReceiving: .stopInterruptReceiving
        case .interruptReceivingStatus: .interruptReceivingStatus
        case .allocBulkStreams: .allocBulkStreams
        case .freeBulkStreams: .freeBulkStreams
        case .bulkStreamsStatus: .bulkStreamsStatus
        case .cancelDataPacket: .cancelDataPacket
        case .filterReject: .filterReject
        case .filterFilter: .filterFilter
        case .deviceDisconnectAck: .deviceDisconnectAck
        case .startBulkReceiving: .startBulkReceiving
        case .stopBulkReceiving: .stopBulkReceiving
        case .bulkReceivingStatus: .bulkReceivingStatus
        case .controlPacket: .controlPacket
        case .bulkPacket: .bulkPacket
        case .isoPacket: .isoPacket
        case .interruptPacket: .interruptPacket
        case .bufferedBulkPacket: .bufferedBulkPacket
        }
    }
}
