// libFuzzer target: the profile loader (Profile): libyaml events to the
// tree, the typed decoding with its diagnostics, and the cross-checks.
// Files are not looked at (checkFiles: false).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProfile(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = YAMLReader.parse(bytes, file: "fuzz.yaml")
    let result = ProfileLoader.load(contents: String(decoding: bytes, as: UTF8.self), path: "/nonexistent/fuzz.yaml",
                                    hostname: "fuzzhost", environment: [:], checkFiles: false)
    // The loader's invariant: a profile exactly when there is no error.
    precondition(result.isValid == result.errors.isEmpty)
    for d in result.diagnostics { precondition(d.line >= 0 && d.column >= 0) }
    return 0
}
