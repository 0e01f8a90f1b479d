/// The tool's version: `usbredir --version`, and the name it gives in its
/// usbredir hello.
public enum USBRedirVersion {
    public static let string = "0.1.0"
    /// What the host announces in its hello message.
    public static let hello = "usbredir-swift \(string)"
}
