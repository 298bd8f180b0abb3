#!/usr/bin/env bash
# Prints the cargo flag that turns on the `ocr` feature when tesseract (with English data) is installed, and nothing,
# with a note on stderr, when it is not.
if command -v tesseract >/dev/null 2>&1 && tesseract --list-langs 2>/dev/null | grep -qx eng; then
  echo "--features ocr"
else
  echo "ocr_features: tesseract not found: building without the ocr feature (images are checked, not read);" \
       "run scripts/install_ocr.sh to read them" >&2
fi
