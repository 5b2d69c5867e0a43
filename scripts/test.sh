#!/usr/bin/env bash
# The test command of the README and of CI (.ci/run runs exactly this, then a Python 3.10 leg).
#
#   bash scripts/test.sh [PYTEST ARGS...]
#
# 1. Installs what the tests need and this machine lacks: mosquitto (broker tests), PostgreSQL (the
#    console store on a real server) and Chromium with its WebDriver (the console in a real
#    browser), from the distribution's packages when run as root on Debian/Ubuntu; otherwise it
#    says in one line what is missing (those tests then skip, each naming the package).
# 2. Installs binwatch with every extra (pip install -e ".[all,dev]").
# 3. Runs pytest. It exits non-zero when a test fails or when no test was collected.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
pg_initdb() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || have initdb; }

missing=()
have mosquitto || missing+=(mosquitto)
pg_initdb || missing+=(postgresql)
{ have chromium || have chromium-browser; } || missing+=(chromium)
have chromedriver || missing+=(chromium-driver)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing test dependencies: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing for some tests (they will skip): ${missing[*]} -- install with: sudo apt-get install ${missing[*]}" >&2
  fi
fi
# Package installs may start system services; the tests start their own brokers and databases.
for svc in mosquitto postgresql; do
  (systemctl stop "$svc" || service "$svc" stop || true) >/dev/null 2>&1
done

python -m pip install -q -e ".[all,dev]"

set +e
python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
