#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real: chromium (the
# dashboard in a headless browser), nginx (the reverse-proxy config),
# prometheus (for promtool, which checks the alert rules), jq and openssl
# (runbooks, TLS test certificates). Used by `make test` only; serving needs
# none of them. Skipped when they are already there, or when this is not a
# root shell on Debian (the tests that need them then skip and say why).
#
# Services: Debian starts nginx and prometheus when it installs them. The
# tests need neither service (they run their own nginx with their own config
# on free loopback ports, and only promtool of prometheus), so this script
# asks Debian not to start them during its install (policy-rc.d, the standard
# switch, honoured by invoke-rc.d and deb-systemd-invoke) instead of stopping
# anything afterwards. It never stops or kills a service or process.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v jq >/dev/null 2>&1 || need+=(jq)          # the runbooks use it
command -v openssl >/dev/null 2>&1 || need+=(openssl) # the nginx TLS test makes a certificate
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-test-system: not root on Debian; not installing ${need[*]} (their tests will skip)" >&2
  exit 0
fi
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  # Ours only for the install below, then removed; an existing one is left alone.
  trap 'rm -f "$policy"' EXIT
  printf '#!/bin/sh\n# written by StemeDB scripts/setup-test-system.sh during apt-get install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
fi
echo "setup-test-system: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && \
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || \
  echo "setup-test-system: apt-get failed for ${need[*]}; their tests will skip" >&2
exit 0
