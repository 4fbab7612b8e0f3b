#!/usr/bin/env bash
# Installs the system tools some formats need (OCR, legacy Office, PDF rendering) with apt-get
# when this user may (root or passwordless sudo); otherwise names what is missing and what
# Quarry refuses meanwhile. QUARRY_SKIP_SYSTEM_PACKAGES=1 skips it; with
# QUARRY_REQUIRE_SYSTEM_PACKAGES=1 (the Dockerfile) a failed install is an error.
set -uo pipefail
[ "${QUARRY_SKIP_SYSTEM_PACKAGES:-0}" = "1" ] && exit 0

# OCR languages beyond English: a useful set; add more with tesseract-ocr-<code>.
LANGS=(osd eng deu fra spa ita por nld rus ukr ara chi-sim chi-tra jpn kor hin)
need=()
command -v tesseract >/dev/null || need+=(tesseract-ocr)
for lang in "${LANGS[@]}"; do
    [ -n "$(ls /usr/share/tesseract-ocr/*/tessdata/"${lang//-/_}".traineddata 2>/dev/null)" ] \
        || need+=("tesseract-ocr-$lang")
done
command -v pdfinfo >/dev/null || need+=(poppler-utils)
command -v soffice >/dev/null || need+=(libreoffice-core libreoffice-writer libreoffice-impress libreoffice-calc)
((${#need[@]})) || exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="none"; fi
fi
if [ "$sudo" != "none" ] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${need[*]}"
    if $sudo apt-get update -q >/dev/null \
        && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
            "${need[@]}" >/dev/null; then
        exit 0
    fi
fi
if [ "${QUARRY_REQUIRE_SYSTEM_PACKAGES:-0}" = "1" ]; then
    echo "error: could not install ${need[*]}" >&2
    exit 1
fi
cat >&2 <<MSG
warning: these system packages are missing and could not be installed here:
  ${need[*]}
Install them (apt-get install ${need[*]}). Meanwhile:
  - without tesseract-ocr: images and scanned PDF pages are refused (unsupported_here);
  - without a tesseract-ocr-<lang> pack: text in that language is read as English;
  - without libreoffice-*: .doc .ppt .xls (and .dot .pps .pot .xlt .odp .ods) are refused;
  - without poppler-utils: a long PDF gets only QUARRY_PARSE_TIMEOUT_S, not more per page.
MSG
exit 0
