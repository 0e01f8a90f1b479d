import ArgumentParser
import Logging

/// `--log-level` and `--log-format`, shared by the commands that log.
struct LogOptions: ParsableArguments {
    /// swift-log's levels, by their names, so `--help` lists the choices.
    enum Level: String, CaseIterable, ExpressibleByArgument {
        case trace, debug, info, notice, warning, error, critical

        var loggerLevel: Logger.Level { Logger.Level(rawValue: rawValue)! }
    }

    @Option(name: .customLong("log-level"), help: "Override the profile's log levels.")
    var level: Level?

    @Option(name: .customLong("log-format"), help: "One line of text, or one JSON object, per event.")
    var format: LineLogHandler.Format = .text
}

extension LineLogHandler.Format: ExpressibleByArgument {}
