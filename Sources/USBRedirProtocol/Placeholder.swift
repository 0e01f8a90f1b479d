public enum USBRedirProtocolPlaceholder {}
