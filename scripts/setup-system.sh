#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real: chromium (the
# dashboard in a headless browser), nginx (the reverse-proxy config),
# prometheus (promtool checks the alert rules), jq and openssl (runbooks,
# TLS test certificates). Skipped when they are already
# there, or when this is not a root shell on Debian (the tests that need them
# then skip and say why).
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v jq >/dev/null 2>&1 || need+=(jq)          # the runbooks use it
command -v openssl >/dev/null 2>&1 || need+=(openssl) # the nginx TLS test makes a certificate
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-system: not root on Debian; not installing ${need[*]} (their tests will skip)" >&2
  exit 0
fi
echo "setup-system: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && \
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || \
  echo "setup-system: apt-get failed for ${need[*]}; their tests will skip" >&2
# nginx and prometheus start services on install; the tests run their own.
for svc in nginx prometheus; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || true
  pkill -x "$svc" 2>/dev/null || true
done
exit 0
