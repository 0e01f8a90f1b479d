import NIOCore

/// Incremental usbredir parser for one side of a connection: feed it bytes
/// in chunks of any size, take typed packets out. It parses what the *peer*
/// of `role` sends, enforces direction, capability and size rules, and
/// records the peer's hello (which decides header widths from then on).
///
/// Memory is bounded: a header declaring more than
/// `USBRedirLimits.maxDataLength` is rejected before its data is buffered, so
/// after draining, at most one incomplete packet (`maxBufferedBytes`) is held.
public struct USBRedirParser: Sendable {
    /// The most a drained parser holds: one packet of the largest legal size.
    public static let maxBufferedBytes = 16 + 288 + USBRedirLimits.maxDataLength

    private enum State: Sendable {
        case awaitingHeader
        /// Header read and validated; waiting for `length` more bytes.
        case awaitingBody(type: USBRedirMessageType, id: UInt64, length: Int)
        case failed(USBRedirProtocolError)
    }

    public private(set) var negotiation: USBRedirNegotiation
    private var state: State = .awaitingHeader
    private var buffer: ByteBuffer
    /// Bytes that arrived after the packet `buffer` is completing: adopted
    /// as they are and parsed once that packet is out.
    private var overflow: ByteBuffer?
    private let allocator: ByteBufferAllocator

    public init(role: USBRedirRole, capabilities: USBRedirCapabilities,
                allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        self.negotiation = USBRedirNegotiation(role: role, ours: capabilities)
        self.buffer = allocator.buffer(capacity: 0)
        self.allocator = allocator
    }

    /// Bytes held that are not yet part of a returned packet.
    public var bufferedByteCount: Int { buffer.readableBytes + (overflow?.readableBytes ?? 0) }

    public var senderRole: USBRedirRole { negotiation.role.peer }

    public mutating func append(_ bytes: ByteBuffer) {
        if overflow != nil {
            overflow!.writeImmutableBuffer(bytes)   // appended twice without draining
        } else if buffer.readableBytes == 0 {
            buffer = bytes   // common case: no copy at all
        } else if case .awaitingBody(_, _, let length) = state, buffer.readableBytes < length {
            completeBody(length: length, with: bytes)
        } else {
            buffer.writeImmutableBuffer(bytes)
        }
    }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        append(ByteBuffer(bytes: bytes))
    }

    /// A packet larger than one read (bulk OUT data): its bytes go into one
    /// buffer of exactly its size, so each byte is copied once, the buffer
    /// never grows, the storage the last packets still share is never
    /// copied on write, and the bytes after it are adopted, not moved.
    private mutating func completeBody(length: Int, with bytes: ByteBuffer) {
        if buffer.readerIndex != 0 || buffer.writableBytes < length - buffer.readableBytes {
            var body = allocator.buffer(capacity: length)
            body.writeImmutableBuffer(buffer)
            buffer = body
        }
        var rest = bytes
        let missing = length - buffer.readableBytes
        buffer.writeImmutableBuffer(rest.readSlice(length: min(missing, rest.readableBytes))!)
        if rest.readableBytes > 0 { overflow = rest }
    }

    /// The next complete packet, nil when more bytes are needed.
    /// After an error every later call throws the same error.
    public mutating func nextPacket() throws(USBRedirProtocolError) -> USBRedirPacket? {
        while true {
            switch state {
            case .failed(let error):
                throw error
            case .awaitingHeader:
                do {
                    guard let next = try readHeader() else { return nil }
                    state = next
                } catch {
                    state = .failed(error)
                    throw error
                }
            case .awaitingBody(let type, let id, let length):
                guard buffer.readableBytes >= length else { return nil }
                do {
                    let packet = try readBody(type: type, id: id, length: length)
                    state = .awaitingHeader
                    if buffer.readableBytes == 0, let next = overflow {
                        buffer = next
                        overflow = nil
                    }
                    compactIfItPays()
                    return packet
                } catch {
                    state = .failed(error)
                    throw error
                }
            }
        }
    }

    /// Times the buffer was compacted, for the test that checks it is rare.
    private(set) var compactions = 0

    /// Moves the unread bytes to the front only once the consumed prefix is
    /// more than half the storage: amortised linear when one read holds many
    /// packets (compacting after each one was quadratic). An empty buffer is
    /// left alone: the next `append` replaces it without a copy, and clearing
    /// storage the returned packets still share would allocate a fresh one.
    private mutating func compactIfItPays() {
        guard buffer.readableBytes > 0, buffer.readerIndex > buffer.capacity / 2 else { return }
        buffer.discardReadBytes()
        compactions += 1
    }

    private var idWidth: Int { negotiation.isActive(.ids64Bit) ? 8 : 4 }

    private mutating func readHeader() throws(USBRedirProtocolError) -> State? {
        guard buffer.readableBytes >= 8 + idWidth else { return nil }
        let rawType: UInt32 = buffer.le()
        let length: UInt32 = buffer.le()
        let id: UInt64 = idWidth == 8 ? buffer.le() : UInt64(buffer.le(UInt32.self))
        guard let type = USBRedirMessageType(rawValue: rawType) else { throw .unknownType(rawType) }
        let layout = USBRedirMessageLayout.of(type)
        guard layout.canBeSent(by: senderRole) else { throw .wrongDirection(type, sender: senderRole) }
        if negotiation.hasPeerHello == (type == .hello) {
            throw type == .hello ? .duplicateHello : .helloExpectedFirst(type)
        }
        if let cap = USBRedirMessageLayout.requiredCapability(type), !negotiation.isActive(cap) {
            throw .missingCapability(type, cap)
        }
        let headerLength = layout.headerLength(of: type, negotiation)
        guard Int(length) >= headerLength else {
            throw .lengthShorterThanHeader(type, length: length, headerLength: headerLength)
        }
        let dataLength = Int(length) - headerLength
        if dataLength > 0 && !layout.carriesData { throw .unexpectedData(type, dataLength: dataLength) }
        if dataLength > USBRedirLimits.maxDataLength {
            throw .dataTooLong(type, length: UInt64(dataLength), limit: USBRedirLimits.maxDataLength)
        }
        return .awaitingBody(type: type, id: id, length: Int(length))
    }

    private mutating func readBody(type: USBRedirMessageType, id: UInt64, length: Int) throws(USBRedirProtocolError) -> USBRedirPacket {
        let headerLength = USBRedirMessageLayout.of(type).headerLength(of: type, negotiation)
        var header = buffer.readSlice(length: headerLength)!
        let data = length > headerLength ? buffer.readSlice(length: length - headerLength) : nil
        if type == .filterFilter {
            guard let data, data.readableBytes > 0, data.getInteger(at: data.writerIndex - 1, as: UInt8.self) == 0 else {
                throw .invalidField(type, "rules are not NUL-terminated")
            }
        }
        let message = ByteBuffer.decodeUSBRedirMessage(type: type, header: &header, data: data,
                                                       negotiation: negotiation)
        try USBRedirDataRules.validate(message, sender: senderRole)
        if case .hello(let hello) = message {
            negotiation.recordPeerHello(hello.capabilities)
        }
        return USBRedirPacket(id: id, message)
    }
}
