#!/usr/bin/env bash
# Turns a fresh rented Ubuntu/Debian GPU box into a member of a Rung mesh:
#   1. checks the NVIDIA driver (nvidia-smi answers),
#   2. installs Node 20 (NodeSource) and the build tools node-pty needs, when missing,
#   3. installs Rung into /opt/rung (from this checkout, or --from DIR|GIT_URL) and links /usr/local/bin/rung,
#   4. creates the "rung" system user, /var/lib/rung and /etc/rung,
#   5. writes /etc/rung/agent.env (NATS URL, credentials, trusted coordinator keys, price, labels),
#      copies the credentials (and TLS files) into /etc/rung,
#   6. installs deploy/systemd/rung-agent.service, enables and (re)starts it.
#
# Idempotent: every step checks first; files are rewritten only when their content changes, and the
# service is restarted only when something it reads changed.
#
# Usage (as root):
#   deploy/bootstrap-agent.sh --nats tls://coord.example.com:4222 --creds agent-box1.creds \
#       --trust ACOORDINATORPUBLICKEY... [--name box1] [--price 1.90] [--label zone=eu] \
#       [--allow-command "python3 train.py"] [--tls-ca ca.pem [--tls-cert c.pem --tls-key c-key.pem]] \
#       [--prefix rung] [--drain finish|requeue] [--from DIR|GIT_URL] [--no-start] [--dry-run]
#
#   --dry-run   print what it would do and write nothing (the checks still run)
#   DESTDIR=D   write every file under D instead of / and skip the commands that change the running
#               system (apt-get, useradd, systemctl, the Rung build): for packaging and for tests
set -euo pipefail

PROG="$(basename "$0")"
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"

DRY_RUN=0
START=1
NATS_URL=""
CREDS=""
NAME=""
PRICE=""
PREFIX="rung"
DRAIN="requeue"
FROM="$REPO"
TLS_CA=""
TLS_CERT=""
TLS_KEY=""
INSECURE=0
TRUST=()
LABELS=()
ALLOW=()

RUNG_USER="rung"
ETC_DIR="/etc/rung"
STATE_ROOT="/var/lib/rung"
INSTALL_DIR="/opt/rung"
UNIT_PATH="/etc/systemd/system/rung-agent.service"
NODE_MAJOR=20

say() { printf '[%s] %s\n' "$PROG" "$*"; }
die() {
  printf '[%s] error: %s\n' "$PROG" "$*" >&2
  exit 1
}
usage() {
  sed -n '2,/^set -euo pipefail/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit "${1:-0}"
}

# What needs restarting: set when a file the service reads was (re)written.
CHANGED=0

# A command that changes the running system: printed on a dry run, skipped with DESTDIR.
run() {
  if ((DRY_RUN)); then
    say "would run: $*"
  elif [[ -n "$DESTDIR" ]]; then
    say "skipped (DESTDIR is set): $*"
  else
    "$@"
  fi
}

# write_file PATH MODE < content: writes $DESTDIR/PATH when its content or mode differ.
# SHOW=0 keeps the content out of the dry-run output (credentials).
write_file() {
  local path="$DESTDIR$1" mode="$2" content
  content="$(cat)"
  if [[ -f "$path" && "$(cat "$path")" == "$content" && "$(stat -c '%a' "$path")" == "${mode#0}" ]]; then
    say "unchanged: $path"
    return 0
  fi
  CHANGED=1
  if ((DRY_RUN)); then
    say "would write: $path (mode $mode)"
    if [[ "${SHOW:-1}" == 1 ]]; then printf '%s\n' "$content" | indent; fi
    return 0
  fi
  mkdir -p "$(dirname "$path")"
  local tmp
  tmp="$(mktemp "$path.XXXXXX")"
  printf '%s\n' "$content" >"$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$path"
  say "wrote: $path (mode $mode)"
}

# make_dir PATH MODE: creates $DESTDIR/PATH.
make_dir() {
  local path="$DESTDIR$1" mode="$2"
  if [[ -d "$path" ]]; then
    return 0
  fi
  if ((DRY_RUN)); then
    say "would create: $path (mode $mode)"
  else
    mkdir -p "$path"
    chmod "$mode" "$path"
    say "created: $path"
  fi
}

# Hands a path to the rung user (a command: with DESTDIR the user may not exist).
own() {
  run chown "$@"
}

# An environment file value: double-quoted, with \ and " escaped (systemd's EnvironmentFile syntax).
quote() {
  local v="${1//\\/\\\\}"
  printf '"%s"' "${v//\"/\\\"}"
}

indent() {
  local line
  while IFS= read -r line; do printf '    | %s\n' "$line"; done
}

join_by() {
  local sep="$1"
  shift
  local out="" x
  for x in "$@"; do out+="${out:+$sep}$x"; done
  printf '%s' "$out"
}

parse_args() {
  while (($#)); do
    case "$1" in
      --nats) NATS_URL="${2:?--nats needs a URL}"; shift ;;
      --creds) CREDS="${2:?--creds needs a file}"; shift ;;
      --trust) TRUST+=("${2:?--trust needs a public key}"); shift ;;
      --insecure) INSECURE=1 ;;
      --name) NAME="${2:?--name needs a name}"; shift ;;
      --price) PRICE="${2:?--price needs an amount}"; shift ;;
      --label) LABELS+=("${2:?--label needs key=value}"); shift ;;
      --allow-command) ALLOW+=("${2:?--allow-command needs a prefix}"); shift ;;
      --tls-ca) TLS_CA="${2:?--tls-ca needs a file}"; shift ;;
      --tls-cert) TLS_CERT="${2:?--tls-cert needs a file}"; shift ;;
      --tls-key) TLS_KEY="${2:?--tls-key needs a file}"; shift ;;
      --prefix) PREFIX="${2:?--prefix needs a name}"; shift ;;
      --drain) DRAIN="${2:?--drain needs finish or requeue}"; shift ;;
      --from) FROM="${2:?--from needs a directory or git URL}"; shift ;;
      --no-start) START=0 ;;
      --dry-run) DRY_RUN=1 ;;
      -h | --help) usage 0 ;;
      *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
  done
  [[ -n "$NATS_URL" ]] || die "--nats URL is required (the mesh's NATS, e.g. tls://coord.example.com:4222)"
  [[ -z "$CREDS" || -r "$CREDS" ]] || die "--creds $CREDS is not a readable file"
  if ((${#TRUST[@]} == 0 && !INSECURE)); then
    die "--trust PUBKEY is required (signing.pub from \"rung auth init\"): without it the agent would run any command anyone able to publish work sends it"
  fi
  ((${#TRUST[@]} == 0 || !INSECURE)) || die "--trust and --insecure exclude each other"
  local k
  for k in "${TRUST[@]}"; do
    [[ "$k" =~ ^[A-Z][A-Z2-7]{55}$ ]] || die "--trust $k is not an nkey public key (56 characters, A-Z and 2-7)"
  done
  [[ "$DRAIN" == finish || "$DRAIN" == requeue ]] || die "--drain must be finish or requeue"
  [[ -z "$PRICE" || "$PRICE" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--price must be a number, e.g. 1.90"
  for k in "${LABELS[@]}"; do [[ "$k" == ?*=* && "$k" != *,* ]] || die "--label must be key=value without commas, got $k"; done
  for k in "${ALLOW[@]}"; do [[ "$k" != *';'* ]] || die "--allow-command may not contain ';', got $k"; done
  local f
  for f in "$TLS_CA" "$TLS_CERT" "$TLS_KEY"; do [[ -z "$f" || -r "$f" ]] || die "$f is not a readable file"; done
  [[ -z "$TLS_CERT" && -z "$TLS_KEY" || -n "$TLS_CERT" && -n "$TLS_KEY" ]] || die "--tls-cert and --tls-key go together"
  if [[ -z "$NAME" ]]; then
    NAME="$(hostname | tr -c 'A-Za-z0-9_\n-' '-' | sed -e 's/^-*//' -e 's/-*$//' | cut -c1-64)"
  fi
  [[ "$NAME" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || die "--name must be letters, digits, - and _ (at most 64), got $NAME"
}

check_root() {
  if ((!DRY_RUN)) && [[ -z "$DESTDIR" && "$(id -u)" -ne 0 ]]; then
    die "run it as root (sudo $0 …), or with --dry-run to see what it would do"
  fi
}

check_gpu() {
  command -v nvidia-smi >/dev/null 2>&1 ||
    die "nvidia-smi was not found: install the NVIDIA driver first (e.g. apt-get install nvidia-driver-535) and run this again"
  local gpus
  if ! gpus="$(nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>&1)"; then
    die "nvidia-smi failed, so the NVIDIA driver is not working: ${gpus}"
  fi
  [[ -n "$gpus" ]] || die "nvidia-smi lists no GPU"
  say "NVIDIA driver answers; GPUs:"
  printf '%s\n' "$gpus" | indent
}

node_major() {
  if command -v node >/dev/null 2>&1; then
    node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
  else
    echo 0
  fi
}

install_node() {
  local have
  have="$(node_major)"
  if ((have >= NODE_MAJOR)); then
    say "Node $(node --version) present"
  else
    say "installing Node $NODE_MAJOR from NodeSource (found ${have/#0/none})"
    run apt-get update -qq
    run apt-get install -y -qq ca-certificates curl gnupg
    run install -d -m 0755 /etc/apt/keyrings
    run sh -c "curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --batch --yes --dearmor -o /etc/apt/keyrings/nodesource.gpg"
    run sh -c "echo 'deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://deb.nodesource.com/node_${NODE_MAJOR}.x nodistro main' >/etc/apt/sources.list.d/nodesource.list"
    run apt-get update -qq
    run apt-get install -y -qq nodejs
  fi
  # node-pty is a native addon: it builds with python3, make and g++.
  local missing=() p
  for p in git python3 make g++; do command -v "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    run apt-get install -y -qq git python3 make g++
  fi
}

install_rung() {
  if [[ "$FROM" =~ ^(https?|git|ssh):// || "$FROM" == *.git ]]; then
    if [[ -d "$DESTDIR$INSTALL_DIR/.git" ]]; then
      run git -C "$INSTALL_DIR" pull --ff-only
    else
      run git clone --depth 1 "$FROM" "$INSTALL_DIR"
    fi
  else
    [[ -f "$FROM/package.json" && -d "$FROM/packages/cli" ]] || die "--from $FROM is not a Rung checkout"
    # Sources only: the dependencies and the build are made on this machine (node-pty is native).
    run mkdir -p "$INSTALL_DIR"
    run bash -c "tar -C $(printf '%q' "$FROM") --exclude=node_modules --exclude=dist --exclude='*.tsbuildinfo' --exclude=.git -cf - . | tar -C $(printf '%q' "$INSTALL_DIR") -xf -"
  fi
  # ./setup --no-apt: pnpm, the workspace's packages and the build; safe to run again.
  run "$INSTALL_DIR/setup" --no-apt
  local target="$INSTALL_DIR/packages/cli/dist/bin.js" link="$DESTDIR/usr/local/bin/rung"
  if [[ "$(readlink "$link" 2>/dev/null || true)" == "$target" ]]; then
    say "unchanged: $link"
  elif ((DRY_RUN)); then
    say "would link: $link -> $target"
  else
    mkdir -p "$(dirname "$link")"
    ln -sfn "$target" "$link"
    say "linked: $link -> $target"
  fi
}

create_user() {
  if id "$RUNG_USER" >/dev/null 2>&1; then
    say "user $RUNG_USER present"
  else
    run useradd --system --home-dir "$STATE_ROOT" --shell /usr/sbin/nologin "$RUNG_USER"
  fi
  make_dir "$ETC_DIR" 0750
  make_dir "$STATE_ROOT" 0750
  make_dir "$STATE_ROOT/work" 0750
  make_dir "$STATE_ROOT/state" 0750
  own "root:$RUNG_USER" "$DESTDIR$ETC_DIR"
  own -R "$RUNG_USER:$RUNG_USER" "$DESTDIR$STATE_ROOT"
}

# copy_secret SRC DEST: a credentials or key file, readable by the rung group only.
copy_secret() {
  SHOW=0 write_file "$2" 0640 <"$1"
  own "root:$RUNG_USER" "$DESTDIR$2"
}

write_config() {
  local creds_path="" ca="" cert="" key=""
  if [[ -n "$CREDS" ]]; then
    creds_path="$ETC_DIR/agent.creds"
    copy_secret "$CREDS" "$creds_path"
  fi
  if [[ -n "$TLS_CA" ]]; then
    ca="$ETC_DIR/tls/ca.pem"
    write_file "$ca" 0644 <"$TLS_CA"
  fi
  if [[ -n "$TLS_CERT" ]]; then
    cert="$ETC_DIR/tls/agent.pem"
    key="$ETC_DIR/tls/agent-key.pem"
    write_file "$cert" 0644 <"$TLS_CERT"
    copy_secret "$TLS_KEY" "$key"
  fi
  {
    echo "# Settings of rung-agent.service, written by deploy/bootstrap-agent.sh (run it again to change them)."
    echo "RUNG_NATS_URL=$(quote "$NATS_URL")"
    [[ -z "$creds_path" ]] || echo "RUNG_NATS_CREDS=$(quote "$creds_path")"
    [[ -z "$ca" ]] || echo "RUNG_TLS_CA=$(quote "$ca")"
    [[ -z "$cert" ]] || echo "RUNG_TLS_CERT=$(quote "$cert")"
    [[ -z "$key" ]] || echo "RUNG_TLS_KEY=$(quote "$key")"
    echo "RUNG_PREFIX=$(quote "$PREFIX")"
    echo "RUNG_AGENT_NAME=$(quote "$NAME")"
    if ((INSECURE)); then
      echo "RUNG_INSECURE=1"
    else
      echo "RUNG_TRUST=$(quote "$(join_by , "${TRUST[@]}")")"
    fi
    ((${#ALLOW[@]} == 0)) || echo "RUNG_ALLOW_COMMAND=$(quote "$(join_by ';' "${ALLOW[@]}")")"
    [[ -z "$PRICE" ]] || echo "RUNG_PRICE_PER_GPU_HOUR=$(quote "$PRICE")"
    ((${#LABELS[@]} == 0)) || echo "RUNG_LABELS=$(quote "$(join_by , "${LABELS[@]}")")"
    echo "RUNG_DRAIN=$(quote "$DRAIN")"
    echo "RUNG_WORKDIR=$(quote "$STATE_ROOT/work")"
    echo "RUNG_STATE_DIR=$(quote "$STATE_ROOT/state")"
  } | write_file "$ETC_DIR/agent.env" 0640
  own "root:$RUNG_USER" "$DESTDIR$ETC_DIR/agent.env"
}

install_unit() {
  write_file "$UNIT_PATH" 0644 <"$HERE/systemd/rung-agent.service"
  run systemctl daemon-reload
  if ((!START)); then
    say "not starting the service (--no-start); start it with: systemctl enable --now rung-agent"
    return 0
  fi
  run systemctl enable rung-agent.service
  if ((CHANGED)); then
    run systemctl restart rung-agent.service
  else
    run systemctl start rung-agent.service
  fi
}

main() {
  parse_args "$@"
  check_root
  ((DRY_RUN)) && say "dry run: nothing is written or changed"
  [[ -z "$DESTDIR" ]] || say "DESTDIR=$DESTDIR: files go there; commands that change this system are skipped"
  check_gpu
  install_node
  install_rung
  create_user
  CHANGED=0
  write_config
  install_unit
  say "agent $NAME set up for $NATS_URL; follow it with: journalctl -u rung-agent -f"
}

main "$@"
