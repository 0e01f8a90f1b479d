#!/usr/bin/env bash
# Builds out/usbredir_VERSION_amd64.deb with dpkg-deb (called by `make deb`).
#
#   scripts/make-deb.sh BINARY [OUTDIR]
#
# BINARY is the usbredir to ship (make deb passes the static release
# build); it is copied, stamped with the git commit (--version) and
# stripped here. The tree is staged with the Makefile's own `install`
# target (Debian's paths), so the package and `make install` cannot drift;
# the control fields come from dist/debian/. Depends is computed from the
# binary by dpkg-shlibdeps. Then lintian runs on the result; its output is
# kept in OUTDIR/lintian.txt and errors fail the build.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:?usage: make-deb.sh BINARY [OUTDIR]}
out=${2:-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(sed -n 's/.*static let string = "\(.*\)".*/\1/p' Sources/Common/Version.swift)
[ -n "$version" ] || { echo "make-deb: no version in Sources/Common/Version.swift" >&2; exit 1; }
deb="$out/usbredir_${version}_amd64.deb"
work=$(mktemp -d "${TMPDIR:-/tmp}/usbredir-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"

# The binary: a copy, stamped and stripped (lintian: unstripped-binary).
cp "$binary" "$work/usbredir"
python3 scripts/stamp-commit.py "$work/usbredir" "${COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$work/usbredir"

# Files, where Debian 12 wants them.
make --no-print-directory install DESTDIR="$root" PREFIX=/usr BINARY="$work/usbredir" \
    UDEVRULESDIR=/lib/udev/rules.d UNITDIR=/lib/systemd/system \
    ZSHCOMPDIR=/usr/share/zsh/vendor-completions >/dev/null
# ArgumentParser starts its bash completion with a #! line; a sourced
# completion file has none (lintian: bash-completion-with-hashbang).
sed -i '1{/^#!/d}' "$root/usr/share/bash-completion/completions/usbredir"
doc="$root/usr/share/doc/usbredir"
# Every example profile, with the small files they refer to (they validate as shipped).
cp profiles/*.yaml "$doc/examples/"
cp -r profiles/images profiles/secrets "$doc/examples/"
install -m 644 dist/debian/copyright "$doc/copyright"
gzip -9n -c dist/debian/changelog > "$doc/changelog.gz"
gzip -9n "$root"/usr/share/man/man*/*.[0-9]
install -D -m 644 dist/debian/lintian-overrides "$root/usr/share/lintian/overrides/usbredir"
# The profiles' folder (the unit applies /etc/usbredir/NAME.yaml).
install -d -m 755 "$root/etc/usbredir"
find "$root" -type d -exec chmod 755 {} +
find "$root" -type f -exec chmod 644 {} +
chmod 755 "$root/usr/bin/usbredir"

# Control: maintainer scripts, md5sums, and the fields.
install -d -m 755 "$root/DEBIAN"
install -m 755 dist/debian/postinst dist/debian/postrm "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 644 "$root/DEBIAN/md5sums"
# dpkg-shlibdeps reads debian/control of a source package: a minimal one.
mkdir -p "$work/src/debian"
printf 'Source: usbredir\n\nPackage: usbredir\nArchitecture: amd64\n' > "$work/src/debian/control"
# A binary linking the toolchain's shared Swift runtime (a debug build)
# names libraries no Debian package provides: those are left out, the
# rest (libusb, libyaml, liblz4, libc) is what the package depends on.
depends=$(cd "$work/src" && dpkg-shlibdeps -O --ignore-missing-info -e "$root/usr/bin/usbredir" 2>"$work/shlibdeps.err" |
          sed -n 's/^shlibs:Depends=//p') || { cat "$work/shlibdeps.err" >&2; exit 1; }
[ -n "$depends" ] || { echo "make-deb: dpkg-shlibdeps found no dependencies" >&2; cat "$work/shlibdeps.err" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
    dist/debian/control.in > "$root/DEBIAN/control"

dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "make-deb: $deb"
echo "make-deb: Depends: $depends"

# A development binary (swift build without --static-swift-stdlib, as the
# test suite packages) has a RUNPATH into the Swift toolchain: lintian's
# custom-library-search-path error, and a package for this machine only.
allowed='^$'
if readelf -d "$root/usr/bin/usbredir" | grep -q 'R.*PATH.*swift'; then
    echo "make-deb: note: $binary links the toolchain's Swift runtime (RUNPATH): for tests, not for distribution" >&2
    allowed=': custom-library-search-path '
fi

# lintian: no errors; each warning or info left is explained in
# dist/debian/lintian-overrides (shown as O: lines).
if command -v lintian >/dev/null; then
    set +e
    lintian --display-info --show-overrides "$deb" > "$out/lintian.txt" 2>&1
    set -e
    cat "$out/lintian.txt"
    if grep '^[EW]: ' "$out/lintian.txt" | grep -vq "$allowed"; then
        echo "make-deb: lintian reports errors or warnings (above)" >&2
        exit 1
    fi
else
    echo "make-deb: lintian is not installed (scripts/install-deps.sh --all)" >&2
    exit 1
fi
