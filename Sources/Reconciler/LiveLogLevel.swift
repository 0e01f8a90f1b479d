import Logging
import NIOConcurrencyHelpers

/// A log level that can change while loggers made with it are in use, so an
/// edit of an assignment's `log:` applies to its running session at once,
/// without restarting it (every copy of the logger reads the same level).
final class LiveLogLevel: Sendable {
    private let box: NIOLockedValueBox<Logger.Level>

    init(_ level: Logger.Level) { box = NIOLockedValueBox(level) }

    var level: Logger.Level {
        get { box.withLockedValue { $0 } }
        set { box.withLockedValue { $0 = newValue } }
    }

    /// `base` (its handler, label and metadata) with this level.
    func logger(from base: Logger) -> Logger {
        var logger = Logger(label: base.label) { [handler = base.handler] _ in
            LiveLevelLogHandler(inner: handler, live: self)
        }
        logger.handler.metadata = base.handler.metadata
        return logger
    }
}

/// Forwards to another handler; the level comes from a `LiveLogLevel`.
struct LiveLevelLogHandler: LogHandler {
    var inner: any LogHandler
    let live: LiveLogLevel

    var logLevel: Logger.Level {
        get { live.level }
        set { live.level = newValue }
    }

    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) { inner.log(event: event) }
}
