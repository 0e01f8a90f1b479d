#if canImport(Glibc)
import Glibc
#endif

/// libvirt, loaded at run time. The binary does not link libvirt: most lab
/// hosts never name a `libvirt:` endpoint, and linking it pulled ~50 shared
/// libraries (glib, gnutls, libxml2, ...) into every start and made
/// libvirt0 a hard dependency of the package. It is opened with dlopen the
/// first time a libvirt endpoint is used; the few functions we call are
/// looked up with dlsym into typed function pointers.
///
/// libvirt's C ABI is stable (symbols are versioned and never removed), so
/// the signatures and the three constants below are declared here rather
/// than taken from libvirt-dev's headers, which the build no longer needs.
struct LibvirtLibrary: @unchecked Sendable {   // function pointers and a handle: immutable once loaded
    /// The soname Debian's libvirt0 ships.
    static let soname = "libvirt.so.0"
    /// Overrides the library to open (a path or a soname): tests point it at
    /// a file that does not exist to show the tool without libvirt.
    static let overrideVariable = "USBREDIR_LIBVIRT_SO"
    /// What to tell the user when the library is missing.
    static let installHint = "install libvirt0 to use libvirt endpoints"

    // Constants of libvirt's ABI (libvirt-domain.h, virterror.h).
    static let errNoDomain: Int32 = 42            // VIR_ERR_NO_DOMAIN
    static let domainXMLSecure: UInt32 = 1        // VIR_DOMAIN_XML_SECURE
    static let eventIDLifecycle: Int32 = 0        // VIR_DOMAIN_EVENT_ID_LIFECYCLE

    typealias ConnectPtr = OpaquePointer
    typealias DomainPtr = OpaquePointer
    /// virConnectDomainEventLifecycleCallback.
    typealias LifecycleCallback = @convention(c) (ConnectPtr?, DomainPtr?, Int32, Int32, UnsafeMutableRawPointer?) -> Void
    /// virErrorFunc (the error is a virErrorPtr; we never read it).
    typealias ErrorFunc = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void

    let setErrorFunc: @convention(c) (UnsafeMutableRawPointer?, ErrorFunc?) -> Void
    let eventRegisterDefaultImpl: @convention(c) () -> Int32
    let eventRunDefaultImpl: @convention(c) () -> Int32
    let connectOpen: @convention(c) (UnsafePointer<CChar>?) -> ConnectPtr?
    let connectClose: @convention(c) (ConnectPtr?) -> Int32
    let connectIsAlive: @convention(c) (ConnectPtr?) -> Int32
    let connectSetKeepAlive: @convention(c) (ConnectPtr?, Int32, UInt32) -> Int32
    /// The callback parameter is libvirt's generic `void (*)(void)`: every
    /// event kind registers through it with its own signature cast away.
    let connectDomainEventRegisterAny: @convention(c) (ConnectPtr?, DomainPtr?, Int32, (@convention(c) () -> Void)?,
                                                       UnsafeMutableRawPointer?,
                                                       (@convention(c) (UnsafeMutableRawPointer?) -> Void)?) -> Int32
    let connectDomainEventDeregisterAny: @convention(c) (ConnectPtr?, Int32) -> Int32
    let domainLookupByName: @convention(c) (ConnectPtr?, UnsafePointer<CChar>?) -> DomainPtr?
    let domainFree: @convention(c) (DomainPtr?) -> Int32
    let domainGetState: @convention(c) (DomainPtr?, UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?,
                                        UInt32) -> Int32
    let domainGetXMLDesc: @convention(c) (DomainPtr?, UInt32) -> UnsafeMutablePointer<CChar>?
    let domainGetName: @convention(c) (DomainPtr?) -> UnsafePointer<CChar>?
    let getLastErrorCode: @convention(c) () -> Int32
    let getLastErrorMessage: @convention(c) () -> UnsafePointer<CChar>?

    /// The library, opened on first use; the same answer ever after.
    static func load() throws(LibvirtError) -> LibvirtLibrary {
        switch loaded {
        case .success(let library): return library
        case .failure(let error): throw error
        }
    }

    /// Whether libvirt can be used here (validate asks before connecting).
    static var availability: LibvirtError? {
        if case .failure(let error) = loaded { return error }
        return nil
    }

    /// A static let is initialised once, on first use, under a lock: the
    /// one dlopen of the process.
    private static let loaded: Result<LibvirtLibrary, LibvirtError> = open(name: libraryName())

    static func libraryName(_ environment: [String: String] = currentEnvironment()) -> String {
        guard let name = environment[overrideVariable], !name.isEmpty else { return soname }
        return name
    }

    private static func currentEnvironment() -> [String: String] {
        guard let value = getenv(overrideVariable) else { return [:] }
        return [overrideVariable: String(cString: value)]
    }

    static func open(name: String) -> Result<LibvirtLibrary, LibvirtError> {
        // RTLD_NOW: a library without one of our functions fails here, at
        // the load, not at the first call. Never closed: libvirt's event
        // thread runs for the rest of the process.
        guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else {
            let why = dlerror().map { String(cString: $0) } ?? "not found"
            return .failure(.libraryMissing("\(installHint) (cannot load \(name): \(why))"))
        }
        do {
            return .success(try LibvirtLibrary(handle: handle))
        } catch {
            return .failure(.libraryMissing("\(installHint) (\(name): \(error.reason))"))
        }
    }

    private struct MissingSymbol: Error { let reason: String }

    private init(handle: UnsafeMutableRawPointer) throws(MissingSymbol) {
        func symbol<T>(_ name: String) throws(MissingSymbol) -> T {
            guard let pointer = dlsym(handle, name) else { throw MissingSymbol(reason: "no symbol \(name)") }
            return unsafeBitCast(pointer, to: T.self)
        }
        setErrorFunc = try symbol("virSetErrorFunc")
        eventRegisterDefaultImpl = try symbol("virEventRegisterDefaultImpl")
        eventRunDefaultImpl = try symbol("virEventRunDefaultImpl")
        connectOpen = try symbol("virConnectOpen")
        connectClose = try symbol("virConnectClose")
        connectIsAlive = try symbol("virConnectIsAlive")
        connectSetKeepAlive = try symbol("virConnectSetKeepAlive")
        connectDomainEventRegisterAny = try symbol("virConnectDomainEventRegisterAny")
        connectDomainEventDeregisterAny = try symbol("virConnectDomainEventDeregisterAny")
        domainLookupByName = try symbol("virDomainLookupByName")
        domainFree = try symbol("virDomainFree")
        domainGetState = try symbol("virDomainGetState")
        domainGetXMLDesc = try symbol("virDomainGetXMLDesc")
        domainGetName = try symbol("virDomainGetName")
        getLastErrorCode = try symbol("virGetLastErrorCode")
        getLastErrorMessage = try symbol("virGetLastErrorMessage")
    }

    /// Registers a lifecycle callback (libvirt takes it as its generic
    /// callback type, as the VIR_DOMAIN_EVENT_CALLBACK macro casts it).
    func registerLifecycle(_ connection: ConnectPtr, _ callback: LifecycleCallback,
                           _ opaque: UnsafeMutableRawPointer) -> Int32 {
        connectDomainEventRegisterAny(connection, nil, Self.eventIDLifecycle,
                                      unsafeBitCast(callback, to: (@convention(c) () -> Void).self), opaque, nil)
    }

    var lastMessage: String { getLastErrorMessage().map { String(cString: $0) } ?? "unknown libvirt error" }
}
