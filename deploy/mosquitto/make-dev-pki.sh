#!/usr/bin/env bash
# DEVELOPMENT ONLY: a throw-away CA, broker certificate, client certificates, password file and ACL
# for a binwatch mosquitto (deploy/mosquitto/mosquitto.conf). See docs/broker.md.
set -euo pipefail

PROG=$(basename "$0")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  cat <<USAGE
Usage: $PROG [options] OUTDIR

FOR DEVELOPMENT AND TESTS ONLY. Makes, in OUTDIR, everything a binwatch mosquitto needs:

  ca.pem, ca.key               a development CA (its key lies unprotected beside it)
  server.pem, server.key       broker certificate for --host (SAN: the host, localhost, 127.0.0.1)
  clients/NAME.pem, .key       client certificates (CN = NAME) for --client-cert / --client-certs
  passwd                       mosquitto password file (mosquitto_passwd) for every user
  credentials/NAME.password    each user's random password (mode 600; for mqtt.password_file)
  acl                          the ACL (make-acl.sh) for the devices and roles
  DEVELOPMENT-ONLY.txt         says so

A device NAME is SITE/DEVICE, so its files are clients/SITE/DEVICE.pem and
credentials/SITE/DEVICE.password. A production broker gets its certificate from your real CA and
its passwords from your secret store (docs/broker.md); never ship this CA.

Options:
  --host NAME           host name clients dial (default: localhost); an IPv4 address also works
  --device SITE/DEVICE[:GROUP[,GROUP...]]   a device user and its groups (repeatable)
  --devices FILE        one device per line: SITE/DEVICE [GROUP ...] ('#' starts a comment)
  --deploy-user NAME    deploy role user (repeatable; default: binwatch-deploy)
  --operator-user NAME  operator role user (repeatable; default: binwatch-operator)
  --client-cert NAME    also make a client certificate for NAME (repeatable)
  --client-certs        make a client certificate for every user
  --prefix PREFIX       topic prefix for the ACL (default: binwatch/v1)
  --days N              certificate validity in days (default: 365)
  --force               overwrite an existing CA (every certificate it signed stops working)
  -h, --help            show this help

Example:
  $PROG --host broker.dev.local --device dc1/jetson-07:aisle-a --device dc1/jetson-08 \\
      --client-certs ./dev-pki
USAGE
}

die() {
  echo "$PROG: error: $*" >&2
  exit 2
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found ($2)"
}

host=localhost
days=365
force=0
all_certs=0
outdir=""
prefix="binwatch/v1"
acl_args=()
device_users=()
deploy_users=()
operator_users=()
cert_names=()

while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --host) (($# >= 2)) || die "--host needs a value"; host=$2; shift 2 ;;
    --device)
      (($# >= 2)) || die "--device needs a value"
      acl_args+=(--device "$2"); device_users+=("${2%%:*}"); shift 2 ;;
    --devices)
      (($# >= 2)) || die "--devices needs a file"
      [[ -r $2 ]] || die "cannot read devices file '$2'"
      acl_args+=(--devices "$2")
      while IFS= read -r line || [[ -n $line ]]; do
        line=${line%%#*}
        read -r -a words <<<"$line" || true
        if ((${#words[@]})); then device_users+=("${words[0]}"); fi
      done <"$2"
      shift 2 ;;
    --deploy-user) (($# >= 2)) || die "--deploy-user needs a value"; deploy_users+=("$2"); shift 2 ;;
    --operator-user) (($# >= 2)) || die "--operator-user needs a value"; operator_users+=("$2"); shift 2 ;;
    --client-cert) (($# >= 2)) || die "--client-cert needs a value"; cert_names+=("$2"); shift 2 ;;
    --client-certs) all_certs=1; shift ;;
    --prefix) (($# >= 2)) || die "--prefix needs a value"; prefix=$2; shift 2 ;;
    --days) (($# >= 2)) || die "--days needs a value"; days=$2; shift 2 ;;
    --force) force=1; shift ;;
    -*) usage >&2; die "unknown option '$1'" ;;
    *) [[ -z $outdir ]] || die "one OUTDIR only (got '$outdir' and '$1')"; outdir=$1; shift ;;
  esac
done

[[ -n $outdir ]] || { usage >&2; die "OUTDIR is missing"; }
[[ $days =~ ^[1-9][0-9]{0,4}$ ]] || die "--days must be a positive number of days"
[[ $host =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$ ]] || die "--host '$host' is not a host name"
need openssl "apt-get install openssl"
need mosquitto_passwd "apt-get install mosquitto"

((${#deploy_users[@]})) || deploy_users=(binwatch-deploy)
((${#operator_users[@]})) || operator_users=(binwatch-operator)
for u in "${deploy_users[@]}"; do acl_args+=(--deploy-user "$u"); done
for u in "${operator_users[@]}"; do acl_args+=(--operator-user "$u"); done
acl_args+=(--prefix "$prefix")
users=("${device_users[@]}" "${deploy_users[@]}" "${operator_users[@]}")
if ((all_certs)); then cert_names+=("${users[@]}"); fi
for name in "${cert_names[@]}"; do
  [[ $name =~ ^[^/+#:[:space:][:cntrl:]]{1,128}(/[^/+#:[:space:][:cntrl:]]{1,128})?$ ]] ||
    die "client certificate name '$name' must be a user name (NAME or SITE/DEVICE)"
done

if [[ -e $outdir/ca.pem || -e $outdir/ca.key ]] && ((!force)); then
  die "$outdir already holds a CA (ca.pem/ca.key); refusing to overwrite it, since every certificate it signed would stop working. Use --force to make a new one."
fi

# The ACL first: make-acl.sh checks every id before anything is written.
acl_text=$("$HERE/make-acl.sh" "${acl_args[@]}")

mkdir -p "$outdir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

# openssl, quiet unless it fails
ossl() {
  openssl "$@" 2>"$work/openssl.err" || {
    cat "$work/openssl.err" >&2
    die "openssl $1 failed"
  }
}

# an X.509 v3 extension section for `openssl x509 -req -extfile`
ext_file() { # file extensions...
  local f=$1
  shift
  printf '%s\n' "$@" >"$f"
}

# key + certificate signed by the CA: sign NAME_FOR_FILES CN EXTFILE
sign() {
  local base=$1 cn=$2 ext=$3
  # escape what -subj would otherwise split on (SITE/DEVICE has a '/')
  cn=${cn//\\/\\\\}
  cn=${cn//\//\\/}
  cn=${cn//=/\\=}
  cn=${cn//,/\\,}
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$base.key" -out "$work/req.csr" -subj "/O=binwatch development/CN=$cn"
  ossl x509 -req -in "$work/req.csr" -CA "$new/ca.pem" -CAkey "$new/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 -extfile "$ext" \
    -out "$base.pem"
}

# everything is made in $new and moved into OUTDIR at the end, so a failed run leaves OUTDIR as it was
new=$work/out
mkdir -p "$new"

# 1. the CA
cat >"$work/ca.cnf" <<'CNF'
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
O = binwatch development
CN = binwatch DEVELOPMENT CA - not for production
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
ossl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
  -config "$work/ca.cnf" -keyout "$new/ca.key" -out "$new/ca.pem" -days "$days"

# 2. the broker certificate
if [[ $host =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  san="IP:$host"
else
  san="DNS:$host"
fi
[[ $host == localhost ]] || san="$san,DNS:localhost"
[[ $host == 127.0.0.1 ]] || san="$san,IP:127.0.0.1"
ext_file "$work/server.ext" \
  "basicConstraints = critical, CA:FALSE" \
  "keyUsage = critical, digitalSignature, keyAgreement" \
  "extendedKeyUsage = serverAuth" \
  "subjectKeyIdentifier = hash" \
  "authorityKeyIdentifier = keyid" \
  "subjectAltName = $san"
sign "$new/server" "$host" "$work/server.ext"

# 3. client certificates
ext_file "$work/client.ext" \
  "basicConstraints = critical, CA:FALSE" \
  "keyUsage = critical, digitalSignature, keyAgreement" \
  "extendedKeyUsage = clientAuth" \
  "subjectKeyIdentifier = hash" \
  "authorityKeyIdentifier = keyid"
declare -A made=()
for name in "${cert_names[@]}"; do
  [[ -z ${made[$name]:-} ]] || continue
  made[$name]=1
  mkdir -p "$(dirname "$new/clients/$name")"
  sign "$new/clients/$name" "$name" "$work/client.ext"
done

# 4. passwords: random, one file per user, hashed into the password file with mosquitto_passwd -U
#    (plain text goes through a file, never the command line)
: >"$work/passwd"
for u in "${users[@]}"; do
  pw=$(openssl rand -hex 24)
  mkdir -p "$(dirname "$new/credentials/$u")"
  printf '%s\n' "$pw" >"$new/credentials/$u.password"
  printf '%s:%s\n' "$u" "$pw" >>"$work/passwd"
done
mosquitto_passwd -U "$work/passwd"
mv -f "$work/passwd" "$new/passwd"

# 5. the ACL
printf '%s\n' "$acl_text" >"$new/acl"

cat >"$new/DEVELOPMENT-ONLY.txt" <<TXT
Made by deploy/mosquitto/make-dev-pki.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ) for host '$host'.
FOR DEVELOPMENT AND TESTS ONLY: the CA key lies unprotected in this folder, so anyone who can read
it can mint certificates this broker and every client trusting ca.pem will accept. Production
brokers use a certificate from your real CA and passwords from your secret store (docs/broker.md).
TXT
chmod 644 "$new/ca.pem" "$new/server.pem" "$new/DEVELOPMENT-ONLY.txt"
rm -rf "$outdir/clients" "$outdir/credentials"
for f in ca.key ca.pem server.key server.pem passwd acl DEVELOPMENT-ONLY.txt clients credentials; do
  if [[ -e $new/$f ]]; then mv -f "$new/$f" "$outdir/$f"; fi
done
echo "$PROG: DEVELOPMENT PKI for '$host' in $outdir: CA, server certificate, ${#made[@]} client certificate(s), ${#users[@]} user(s) in passwd and acl. Not for production." >&2
