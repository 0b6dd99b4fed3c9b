#!/usr/bin/env bash
# System packages for the services the tests start themselves. Idempotent and quiet; each helper adds its line.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
_apt_updated=0
need() {  # need BINARY PACKAGE...: install PACKAGEs when BINARY is missing
  local binary=$1; shift
  [ -x "$binary" ] && return 0
  if [ "$_apt_updated" = 0 ]; then apt-get update -qq >/dev/null; _apt_updated=1; fi
  apt-get install -y -qq "$@" >/dev/null
}
need /usr/sbin/sshd openssh-server openssh-client   # tests/test_ssh_device.py (real sshd on 127.0.0.1)
need /usr/bin/chromium chromium                     # tests/test_report_browser.py (headless HTML report render)
need /usr/bin/qemu-aarch64-static qemu-user-static  # tests/test_qemu_device.py; its fixture runs setup_arm64 (~140 MB download, ~45 s, cached in ~/.cache/edgeq/arm64-root)
