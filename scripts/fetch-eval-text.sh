#!/usr/bin/env bash
# Fetch a default evaluation / calibration text: a public-domain Jane Austen novel (Project
# Gutenberg's plain text, one line per printed line) for `rtllm eval perplexity` and for the
# calibration pass of `rtllm quantize`.
#
# These machines reach only the package registries, so the text is taken out of Debian's
# `r-cran-janeaustenr` package (version pinned, MIT packaging of the public-domain novels, the
# .deb's SHA-256 checked), fetched by name with `apt-get download`. The novels are stored
# there as R data (a lazy-load database: zlib-compressed, XDR-serialized character vectors);
# a small reader below turns one novel into UTF-8 text, lines joined with "\n". The text's
# SHA-256 is checked too, so every machine evaluates on the same bytes. It lands in
#   "${RTLLM_CACHE_DIR:-$HOME/.cache/rtllm}/eval/<book>.txt"
# and is never committed to git.
#
# Usage:   TEXT=$(scripts/fetch-eval-text.sh [BOOK])
#   BOOK: prideprejudice (default; Pride and Prejudice, 684,768 bytes, about 160k SmolLM2
#         tokens), persuasion (466,854 bytes), northangerabbey (433,411), sensesensibility,
#         emma, mansfieldpark.
# The last (and only) line on stdout is the text's path; progress and errors go to stderr.
# Idempotent (a present file with the right checksum returns at once) and atomic (written
# under a temporary name, then renamed). When apt's package lists are missing it runs
# `apt-get update` once (as root) and retries.
# Environment: RTLLM_CACHE_DIR (cache root), PYTHON (interpreter, default python3).
set -euo pipefail

readonly PACKAGE="r-cran-janeaustenr"
readonly VERSION="1.0.0-1"
readonly DEB_SHA256="df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"
readonly RDATA="usr/lib/R/site-library/janeaustenr/data/Rdata"

BOOK="${1:-prideprejudice}"
case "$BOOK" in
    prideprejudice) TEXT_SHA256="dfc684d4f857fa938268f9ab9c5567b64bd0691251eca959644adeabe6287a4d" ;;
    persuasion) TEXT_SHA256="8061549557aebd2fd6e353d18d9197cb707029112bd52d4d8b174583a925848a" ;;
    northangerabbey) TEXT_SHA256="51f91bbe0517db8e65cff009b097ce0a1836124c4e0532ac19e6c0cad982abed" ;;
    sensesensibility) TEXT_SHA256="105e1651fe93bed7130078578efd31e0c557d68667ba672ddc876f735b30fe09" ;;
    emma) TEXT_SHA256="7c67b5985c6d0de1efaeb5d342d52cb82c38083c40e2295129e30e87ee690ebe" ;;
    mansfieldpark) TEXT_SHA256="98bc90519cdf4ef663ad7de2734bb529435ef24f7abbde6bb1a50898871dafe9" ;;
    *)
        printf 'fetch-eval-text: error: unknown book "%s" (prideprejudice, persuasion, northangerabbey, sensesensibility, emma, mansfieldpark)\n' "$BOOK" >&2
        exit 2
        ;;
esac

PYTHON="${PYTHON:-python3}"
if [[ -z "${RTLLM_CACHE_DIR:-}" && -z "${HOME:-}" ]]; then
    printf 'fetch-eval-text: error: neither RTLLM_CACHE_DIR nor HOME is set\n' >&2
    exit 1
fi
CACHE_DIR="${RTLLM_CACHE_DIR:-$HOME/.cache/rtllm}"
TEXT_DIR="$CACHE_DIR/eval"
DEST="$TEXT_DIR/$BOOK.txt"

log() { printf 'fetch-eval-text: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" ]]; then
    if [[ "$(sha256 "$DEST")" == "$TEXT_SHA256" ]]; then
        printf '%s\n' "$DEST"
        exit 0
    fi
    log "existing $DEST does not have the expected checksum; fetching it again"
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script takes the text from a Debian package"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found: this script takes the text from a Debian package"
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python 3 or set PYTHON"

mkdir -p "$TEXT_DIR"
WORK=$(mktemp -d "$TEXT_DIR/.fetch.XXXXXX")
TMP_DEST="$TEXT_DIR/.$BOOK.txt.partial.$$"
trap 'rm -rf "$WORK"; rm -f "$TMP_DEST"' EXIT
# apt drops privileges to `_apt` for downloads; let it write the work folder.
chmod 0777 "$WORK"

download() { (cd "$WORK" && apt-get download -q "$PACKAGE=$VERSION") >"$WORK/apt.log" 2>&1; }
log "downloading $PACKAGE $VERSION from Debian's package archive (about 1.6 MB)"
if ! download; then
    if [[ "$(id -u)" -eq 0 ]]; then
        log "apt-get download failed; updating the package lists once and retrying"
        apt-get update -qq >>"$WORK/apt.log" 2>&1 || true
        download || { sed 's/^/  apt: /' "$WORK/apt.log" | tail -n 15 >&2; die "could not download $PACKAGE=$VERSION"; }
    else
        sed 's/^/  apt: /' "$WORK/apt.log" | tail -n 15 >&2
        die "could not download $PACKAGE=$VERSION (run 'apt-get update' as root first?)"
    fi
fi

shopt -s nullglob
debs=("$WORK"/*.deb)
shopt -u nullglob
[[ ${#debs[@]} -eq 1 ]] || die "expected one .deb from apt-get, found ${#debs[@]} in $WORK"
[[ "$(sha256 "${debs[0]}")" == "$DEB_SHA256" ]] || die "${debs[0]} does not have the pinned SHA-256 $DEB_SHA256"
dpkg-deb -x "${debs[0]}" "$WORK/x"

"$PYTHON" - "$WORK/x/$RDATA" "$BOOK" "$TMP_DEST" <<'PY' || die "could not read $BOOK out of the package's R data"
# Reads one character vector out of an R lazy-load database (.rdx index + .rdb blobs): the
# index is a gzip'd serialized list; each blob a 4-byte length and a zlib'd serialization.
# Only the R types these files use are read (lists, pairlists, symbols, strings, integers).
import gzip
import struct
import sys
import zlib

base, book, dest = sys.argv[1:4]


class Reader:
    def __init__(self, data):
        self.b, self.i, self.refs = data, 0, []

    def int(self):
        (v,) = struct.unpack(">i", self.b[self.i : self.i + 4])
        self.i += 4
        return v

    def header(self):
        if self.b[:2] != b"X\n":
            sys.exit("not an XDR R serialization")
        self.i = 2
        version = self.int()
        self.int(), self.int()
        if version == 3:
            n = self.int()  # the native encoding's name follows
            self.i += n

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (254, 253, 252, 251, 242, 241):  # NULL and the special environments
            return None
        if kind == 255:  # a reference to an earlier symbol
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind == 1:  # symbol
            sym = ("sym", self.item())
            self.refs.append(sym)
            return sym
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.b[self.i : self.i + n].decode("utf-8")
            self.i += n
            return s
        if kind == 2:  # pairlist
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            car = self.item()
            return [(tag, car)] + (self.item() or [])
        if kind in (16, 19, 20):  # character vector, list, expression
            value = [self.item() for _ in range(self.int())]
        elif kind in (10, 13):  # logical, integer
            n = self.int()
            value = list(struct.unpack(f">{n}i", self.b[self.i : self.i + 4 * n]))
            self.i += 4 * n
        else:
            sys.exit(f"unsupported R type {kind}")
        if has_attr:
            names = [v for k, v in (self.item() or []) if k == ("sym", "names")]
            if names and kind == 19:
                return dict(zip(names[0], value))
        return value


def load(data):
    r = Reader(data)
    r.header()
    return r.item()


index = load(gzip.decompress(open(base + ".rdx", "rb").read()))
offset, length = index["variables"][book]
with open(base + ".rdb", "rb") as f:
    f.seek(offset)
    blob = f.read(length)
lines = load(zlib.decompress(blob[4:]))
with open(dest, "w", encoding="utf-8", newline="\n") as out:
    out.write("\n".join(line or "" for line in lines) + "\n")
PY

got=$(sha256 "$TMP_DEST")
[[ "$got" == "$TEXT_SHA256" ]] || die "extracted $BOOK has SHA-256 $got, expected $TEXT_SHA256"
mv -f "$TMP_DEST" "$DEST"
log "saved $DEST ($(wc -c <"$DEST") bytes)"
printf '%s\n' "$DEST"
