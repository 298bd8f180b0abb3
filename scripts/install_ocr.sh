#!/usr/bin/env bash
# Installs what the `ocr` feature needs: the tesseract program with English data, and the FreeMono font the FigStep
# evaluation renders its benign images with (Debian/Ubuntu packages). Never fails the caller: without root or apt it
# says what to install and the build goes on without `ocr` (scripts/ocr_features.sh decides).
set -uo pipefail
have_ocr() { command -v tesseract >/dev/null 2>&1 && tesseract --list-langs 2>/dev/null | grep -qx eng; }
have_font() { [ -f /usr/share/fonts/truetype/freefont/FreeMonoBold.ttf ]; }
if have_ocr && have_font; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
fi
if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_ocr: cannot install packages here; for image reading install tesseract-ocr, tesseract-ocr-eng" \
       "and fonts-freefont-ttf (the crate builds and tests without the ocr feature meanwhile)" >&2
  exit 0
fi
echo "install_ocr: installing tesseract-ocr tesseract-ocr-eng fonts-freefont-ttf" >&2
$SUDO apt-get update -qq >/dev/null 2>&1
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq tesseract-ocr tesseract-ocr-eng fonts-freefont-ttf >/dev/null 2>&1 \
  || echo "install_ocr: apt-get install failed; building without the ocr feature" >&2
exit 0
