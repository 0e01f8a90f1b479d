import Libvirt
import Profile

/// `validate`'s look at libvirt endpoints: a domain that does not exist,
/// or cannot carry usbredir, is a warning (it may be defined later); when
/// libvirt cannot be reached the warning says that nothing was checked.
public enum LibvirtCheck {
    public static func warnings(_ profile: Profile) async -> [Diagnostic] {
        var out: [Diagnostic] = []
        for endpoint in profile.orderedEndpoints {
            guard case .libvirt(let domain, let uri) = endpoint.kind else { continue }
            let problem: (String, String?)?
            do {
                let resolved = try await Libvirt.shared.resolve(domain: domain, uri: uri)
                problem = Self.problem(resolved)
            } catch LibvirtError.libraryMissing(let why) {
                // A warning, not an error: the profile is valid, and may be
                // checked on a workstation without libvirt; apply says it
                // again for each assignment to this endpoint.
                problem = ("endpoint '\(endpoint.name)': \(why)", "apt install libvirt0")
            } catch {
                problem = ("cannot check domain '\(domain)': \(error)",
                           "validate looks domains up only when libvirt answers; apply waits for it")
            }
            if let (message, hint) = problem {
                out.append(Diagnostic(severity: .warning, file: profile.sourcePath, line: endpoint.location.line,
                                      column: endpoint.location.column, message: message, hint: hint))
            }
        }
        return out
    }

    static func problem(_ d: ResolvedDomain) -> (String, String?)? {
        if d.state == .missing {
            return ("domain '\(d.name)' does not exist on \(d.uri)", "virsh -c \(d.uri) list --all shows the domains")
        }
        if d.graphics == nil { return ("domain '\(d.name)' has no SPICE graphics", "add <graphics type='spice'>") }
        if d.usbredirChannels == 0 {
            return ("domain '\(d.name)' has no usbredir channel", "add <redirdev bus='usb' type='spicevmc'/>")
        }
        return nil
    }
}
