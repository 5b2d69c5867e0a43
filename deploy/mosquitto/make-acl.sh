#!/usr/bin/env bash
# Write the binwatch mosquitto ACL (acl_file): the deploy and operator roles, and one explicit
# `user` block per device. See docs/broker.md. Production and development alike.
set -euo pipefail

PROG=$(basename "$0")

usage() {
  cat <<USAGE
Usage: $PROG [options]

Write the mosquitto ACL of a binwatch broker: the deploy and operator roles and one block per
device (MQTT username SITE/DEVICE). Every topic of a device is written out literally (no %u/%c
patterns, see docs/broker.md), so the file must be regenerated when a device is added, removed or
changes groups; then reload the broker (systemctl reload mosquitto, i.e. SIGHUP).

Options:
  --device SITE/DEVICE[:GROUP[,GROUP...]]   a device and its groups (repeatable)
  --devices FILE        one device per line: SITE/DEVICE [GROUP ...]; '#' starts a comment
  --deploy-user NAME    MQTT username of the deploy role (repeatable; default: binwatch-deploy)
  --operator-user NAME  MQTT username of the operator role (repeatable; default: binwatch-operator)
  --prefix PREFIX       topic prefix (default: binwatch/v1)
  -o, --output FILE     write FILE (replaced atomically, mode 640) instead of standard output
  -h, --help            show this help

Ids (site, device, group, role user) are one topic level: 1-128 characters without '/', '+', '#',
':' (the password file's separator), whitespace or control characters. Site ids must not start
with '_' (fleet and group topics); device ids 'manifest' and 'review' are refused (their subtree
would be the site's manifests or reviews, which the operator writes).

Example:
  $PROG --device dc1/jetson-07:aisle-a,nightly --device dc2/jetson-01 -o /etc/mosquitto/binwatch.acl
USAGE
}

die() {
  echo "$PROG: error: $*" >&2
  exit 2
}

# one topic level: 1..128 characters, no / + # : whitespace or control characters
is_id() {
  [[ $1 =~ ^[^/+#:[:space:][:cntrl:]]{1,128}$ ]]
}

check_id() { # what value
  is_id "$2" || die "$1 '$2' is not one topic level (1-128 characters, no / + # : whitespace or control characters)"
}

prefix="binwatch/v1"
deploy_users=()
operator_users=()
device_specs=()
output=""

while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --device) (($# >= 2)) || die "--device needs a value"; device_specs+=("$2"); shift 2 ;;
    --devices)
      (($# >= 2)) || die "--devices needs a file"
      [[ -r $2 ]] || die "cannot read devices file '$2'"
      while IFS= read -r line || [[ -n $line ]]; do
        line=${line%%#*}
        read -r -a words <<<"$line" || true
        ((${#words[@]})) || continue
        spec=${words[0]}
        if ((${#words[@]} > 1)); then
          groups=$(IFS=,; echo "${words[*]:1}")
          spec="$spec:$groups"
        fi
        device_specs+=("$spec")
      done <"$2"
      shift 2 ;;
    --deploy-user) (($# >= 2)) || die "--deploy-user needs a value"; deploy_users+=("$2"); shift 2 ;;
    --operator-user) (($# >= 2)) || die "--operator-user needs a value"; operator_users+=("$2"); shift 2 ;;
    --prefix) (($# >= 2)) || die "--prefix needs a value"; prefix=$2; shift 2 ;;
    -o | --output) (($# >= 2)) || die "$1 needs a file"; output=$2; shift 2 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

((${#deploy_users[@]})) || deploy_users=(binwatch-deploy)
((${#operator_users[@]})) || operator_users=(binwatch-operator)

[[ $prefix != \$* ]] || die "prefix '$prefix' starts with '\$' (reserved for broker topics)"
IFS=/ read -r -a prefix_levels <<<"$prefix"
[[ $prefix != */ && ${#prefix_levels[@]} -gt 0 ]] || die "prefix '$prefix' has an empty level"
for level in "${prefix_levels[@]}"; do check_id "prefix level" "$level"; done

declare -A seen_user=()
for u in "${deploy_users[@]}" "${operator_users[@]}"; do
  check_id "role user" "$u"
  [[ -z ${seen_user[$u]:-} ]] || die "user '$u' is given twice"
  seen_user[$u]=1
done

# parse and check the devices before writing anything
dev_users=()
declare -A dev_groups=()
for spec in "${device_specs[@]}"; do
  user=${spec%%:*}
  groups=""
  [[ $spec == *:* ]] && groups=${spec#*:}
  [[ $user == */* ]] || die "device '$user' must be SITE/DEVICE"
  site=${user%%/*}
  device=${user#*/}
  check_id "site" "$site"
  check_id "device" "$device"
  [[ $site != _* ]] || die "site '$site' starts with '_' (reserved for the fleet and group topics)"
  [[ $device != manifest ]] || die "device id 'manifest' is reserved (<site>/manifest/# holds the site's manifests)"
  [[ $device != review ]] || die "device id 'review' is reserved (<site>/review/# holds the operators' reviews)"
  [[ -z ${seen_user[$user]:-} ]] || die "device '$user' is given twice"
  seen_user[$user]=1
  clean=()
  if [[ -n $groups ]]; then
    IFS=, read -r -a glist <<<"$groups"
    for g in "${glist[@]}"; do
      check_id "group of $user" "$g"
      [[ " ${clean[*]-} " == *" $g "* ]] || clean+=("$g")
    done
  fi
  dev_users+=("$user")
  dev_groups[$user]="${clean[*]-}"
done

emit() {
  local p=$prefix u site device g
  cat <<HEAD
# binwatch mosquitto ACL (acl_file), written by deploy/mosquitto/make-acl.sh: regenerate it rather
# than editing it, then reload the broker (systemctl reload mosquitto). See docs/broker.md.
#
# Everything not granted here is refused. There are no topic lines before the first user block
# (they would apply to clients without a username) and no %u/%c patterns: each device's topics
# are written out below, so a device can reach its own subtree and nothing else, whatever client
# id it connects with. Device usernames are SITE/DEVICE; role usernames have no '/'.

HEAD
  for u in "${deploy_users[@]}"; do
    cat <<DEPLOY
# role deploy: desired model for a device, a group or the whole fleet (retained; read back to see
# what is set), and the devices' reported model state and status
user $u
topic readwrite $p/_fleet/model/desired
topic readwrite $p/_group/+/model/desired
topic readwrite $p/+/+/model/desired
topic read $p/+/+/model/reported
topic read $p/+/+/status

DEPLOY
  done
  for u in "${operator_users[@]}"; do
    cat <<OPERATOR
# role operator: reads everything under the prefix; publishes bin events, manifests, commands and
# reviews of alerts (never a device's own topics or the desired model)
user $u
topic read $p/#
topic write $p/+/+/bin
topic write $p/+/manifest/+
topic write $p/+/+/cmd/+
topic write $p/+/+/alert/review

OPERATOR
  done
  for u in "${dev_users[@]}"; do
    site=${u%%/*}
    device=${u#*/}
    echo "# device $device at site $site${dev_groups[$u]:+ (groups: ${dev_groups[$u]// /, })}"
    echo "user $u"
    echo "topic write $p/$u/status"
    echo "topic write $p/$u/alert/mismatch"
    echo "topic write $p/$u/alert/snapshot/+"
    echo "topic write $p/$u/bin/outcome"
    echo "topic write $p/$u/result"
    echo "topic write $p/$u/stats"
    echo "topic write $p/$u/model/reported"
    echo "topic write $p/$u/cmd/+/result"
    echo "topic read $p/$u/model/desired"
    echo "topic read $p/_fleet/model/desired"
    for g in ${dev_groups[$u]}; do
      echo "topic read $p/_group/$g/model/desired"
    done
    echo "topic read $p/$site/manifest/#"
    echo "topic read $p/$u/bin"
    echo "topic read $p/$u/cmd/+"
    echo
  done
}

if [[ -z $output ]]; then
  emit
else
  tmp=$(mktemp "$output.XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  emit >"$tmp"
  chmod 640 "$tmp"
  mv -f "$tmp" "$output"
  trap - EXIT
  echo "$PROG: wrote $output (${#dev_users[@]} devices, ${#deploy_users[@]} deploy, ${#operator_users[@]} operator users)" >&2
fi
