# Sourced by the other scripts: installs and starts what Svalbard and its tests need when it is
# missing, and remembers what it started so it can stop it again.
# shellcheck shell=bash

SVALBARD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GARAGE_VERSION="2.5.0"
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
STARTED_PIDS=()

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

apt_install() {
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_answers() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

# PostgreSQL server and client tools (pg_dump, pg_restore, psql), and zstd.
ensure_postgres() {
  local missing=()
  command -v psql >/dev/null && command -v pg_dump >/dev/null || missing+=(postgresql-client)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
  command -v zstd >/dev/null || missing+=(zstd)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  if ! pg_answers; then
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
    if [ -z "$version" ]; then
      log "no PostgreSQL cluster is configured"; return 1
    fi
    # Tests and `dev` connect as postgres over TCP without a password, as on the dev machines.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
      log "trusting local TCP connections in $hba"
      as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do pg_answers && break; sleep 1; done
  fi
  pg_answers || { log "PostgreSQL does not answer on 127.0.0.1:5432"; return 1; }
}

mariadb_answers() { mariadb --no-defaults -h 127.0.0.1 -u root -e 'SELECT 1' >/dev/null 2>&1; }

# MariaDB server and client (mariadb-dump, mariadb), reachable as root over TCP without a
# password, as on the development machines.
ensure_mariadb() {
  local missing=()
  command -v mariadb >/dev/null && command -v mariadb-dump >/dev/null || missing+=(mariadb-client)
  [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  if ! mariadb_answers; then
    if ! mariadb --no-defaults -u root -e 'SELECT 1' >/dev/null 2>&1; then
      log "starting MariaDB"
      as_root install -d -o mysql -g mysql /run/mysqld
      as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
      for _ in $(seq 1 30); do mariadb --no-defaults -u root -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
    fi
    if ! mariadb_answers; then
      log "allowing root over TCP from 127.0.0.1"
      as_root mariadb --no-defaults -u root -e \
        "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
    fi
  fi
  mariadb_answers || { log "MariaDB does not answer on 127.0.0.1:3306"; return 1; }
}

# One role of the test server authenticates with a password even where everything else is
# trusted, so the tests can see a real "password authentication failed".
ensure_password_role() {
  local hba
  hba=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SHOW hba_file')
  if ! grep -qE '^host\s+all\s+svalbard_pw\s' "$hba"; then
    log "requiring a password of role svalbard_pw in $hba"
    as_root sed -i '1i host all svalbard_pw 127.0.0.1/32 scram-sha-256' "$hba"
    psql -h 127.0.0.1 -U postgres -d postgres -qAtc 'SELECT pg_reload_conf()' >/dev/null
  fi
}

# promtool, to check the alert rules (Debian's prometheus package; its server is not started here).
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  log "installing promtool (Debian package prometheus)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

# age and zstd: the standard tools an encrypted archive is restored with by hand (and by a test).
ensure_archive_tools() {
  local missing=()
  command -v age >/dev/null || missing+=(age)
  command -v zstd >/dev/null || missing+=(zstd)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (Debian packages)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Garage, a real S3 server, built once from crates.io into ~/.local.
ensure_garage_binary() {
  if ! command -v garage >/dev/null || ! garage --version 2>/dev/null | grep -q "cargo:$GARAGE_VERSION"; then
    log "building garage $GARAGE_VERSION (once; 10-25 minutes on 2 cores)"
    cargo install garage --version "$GARAGE_VERSION" --locked --root "$HOME/.local" >&2
  fi
}

# Starts a single-node Garage in a scratch folder and exports S3_* for it.
start_garage() {
  ensure_garage_binary
  local dir rpc
  dir=$(mktemp -d "${TMPDIR:-/tmp}/svalbard-garage.XXXXXX")
  S3_PORT=$(free_port); rpc=$(free_port)
  cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
# Archives arrive compressed; compressing them again only costs CPU.
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(openssl rand -hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
TOML
  export S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
  export S3_REGION="garage"
  export S3_BUCKET="svalbard-test"
  export S3_ACCESS_KEY_ID="GK$(openssl rand -hex 12)"
  export S3_SECRET_ACCESS_KEY="$(openssl rand -hex 32)"
  GARAGE_DEFAULT_ACCESS_KEY="$S3_ACCESS_KEY_ID" GARAGE_DEFAULT_SECRET_KEY="$S3_SECRET_ACCESS_KEY" \
    GARAGE_DEFAULT_BUCKET="$S3_BUCKET" RUST_LOG=warn \
    garage -c "$dir/garage.toml" server --single-node --default-bucket >"$dir/garage.log" 2>&1 &
  STARTED_PIDS+=($!)
  GARAGE_DIR="$dir"
  for _ in $(seq 1 50); do
    # Any HTTP answer (403 without credentials) means the S3 API is up.
    if curl -s -o /dev/null "$S3_ENDPOINT/"; then
      log "garage serving S3 on $S3_ENDPOINT (bucket $S3_BUCKET)"
      return 0
    fi
    sleep 0.2
  done
  log "garage did not start:"; cat "$dir/garage.log" >&2; return 1
}

stop_started() {
  for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${GARAGE_DIR:-}" ] && rm -rf "$GARAGE_DIR"
  STARTED_PIDS=()
}

TOOLS_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/svalbard"

# A Python tool pinned to one version, in its own virtualenv under the cache (kept between
# runs); prints the virtualenv's folder.
python_tool() {
  local package=$1 version=$2 venv="$TOOLS_CACHE/$1-$2"
  if [ ! -e "$venv/.installed" ]; then
    python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv python3-pip
    log "installing $package $version (once, into $venv)"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "$package==$version" >&2
    touch "$venv/.installed"
  fi
  printf '%s\n' "$venv"
}

# Node.js and npm, for the TypeScript client.
ensure_node() {
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
}
