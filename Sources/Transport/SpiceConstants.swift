import NIOCore

/// SPICE protocol numbers (spice-protocol's protocol.h and enums.h).
enum Spice {
    static let magic: UInt32 = 0x5144_4552      // "REDQ"
    static let majorVersion: UInt32 = 2
    static let minorVersion: UInt32 = 2
    static let ticketPubkeyBytes = 162          // DER SubjectPublicKeyInfo, RSA-1024
    static let encryptedTicketBytes = 128
    static let maxPasswordLength = 60
    /// How long a link (TCP connected to MAIN_CHANNELS_LIST, or a usbredir
    /// channel's link reply) may take: a silent server must not hold a
    /// reconcile or a stop for ever (design.md, Lifecycle and faults).
    static let handshakeTimeout = TimeAmount.seconds(10)
    /// Largest link reply body we accept (the reply plus a few caps words).
    static let maxLinkReplySize = 4096
    /// Largest message body we buffer: a usbredir packet at our limit, plus slack
    /// (QEMU's net-test PING carries 256,000 bytes).
    static let maxMessageSize = 16 * 1024 * 1024 + 4096
    /// Below this, compressing is not worth it (as spice-gtk does).
    static let compressionThreshold = 1000

    enum ChannelType: UInt8 {
        case main = 1
        case usbredir = 9
    }

    enum CommonCap: Int {
        case authSelection = 0
        case authSpice = 1
        case authSASL = 2
        case miniHeader = 3
    }

    /// SPICEVMC channel cap.
    static let spicevmcCapLZ4 = 0

    enum LinkError: UInt32 {
        case ok = 0, error, invalidMagic, invalidData, versionMismatch, needSecured, needUnsecured,
             permissionDenied, badConnectionID, channelNotAvailable
    }

    // Server -> client, every channel.
    static let msgMigrate: UInt16 = 1
    static let msgSetAck: UInt16 = 3
    static let msgPing: UInt16 = 4
    static let msgDisconnecting: UInt16 = 6
    static let msgNotify: UInt16 = 7
    // Client -> server, every channel.
    static let msgcAckSync: UInt16 = 1
    static let msgcAck: UInt16 = 2
    static let msgcPong: UInt16 = 3
    // Main channel.
    static let msgMainInit: UInt16 = 103
    static let msgMainChannelsList: UInt16 = 104
    static let msgcMainAttachChannels: UInt16 = 104
    // SPICEVMC (usbredir) channel, both directions.
    static let msgVMCData: UInt16 = 101
    static let msgVMCCompressedData: UInt16 = 102
    static let vmcCompressionLZ4: UInt8 = 1
}
