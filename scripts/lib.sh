# Sourced by the scripts beside it: how they print what they do, act as root and install
# Debian packages. Each step is printed before it runs, so a failure shows where it was.

# A step: what is about to happen, in words.
log() { printf '== %s\n' "$*" >&2; }

# A command, printed as it will run, then run.
run() {
  printf '$ %s\n' "$*" >&2
  "$@"
}

# Root for what needs it (apt, services, PostgreSQL's configuration):
# `run "${as_root[@]}" CMD` prints the step, `"${as_root[@]}" CMD` runs a check quietly.
if [ "$(id -u)" = 0 ]; then as_root=(); else as_root=(sudo); fi

# Another system user, e.g. postgres for its own database.
as_user() {
  local user=$1
  shift
  if [ "$(id -u)" = 0 ]; then run runuser -u "$user" -- "$@"; else run sudo -u "$user" "$@"; fi
}

# systemd runs the services where it is the init system; elsewhere (containers, CI) the
# scripts start the daemons themselves.
have_systemd() { [ -d /run/systemd/system ]; }

apt_updated=no
# Installs the Debian packages not yet installed, with one `apt-get update` per run.
apt_install() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$package")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  log "installing ${missing[*]} from Debian's packages"
  # Another apt run (unattended upgrades, a parallel build) holds the lock for a while.
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q)
  if [ "$apt_updated" = no ]; then
    run "${as_root[@]}" "${apt[@]}" update >/dev/null
    apt_updated=yes
  fi
  run "${as_root[@]}" "${apt[@]}" install -y "${missing[@]}" >/dev/null
}

# Runs a check every second until it succeeds: what it waits for, seconds, command...
wait_for() {
  local what=$1 seconds=$2
  shift 2
  local i
  for ((i = 0; i < seconds; i++)); do
    if "$@" >/dev/null 2>&1; then
      log "$what (after ${i}s)"
      return 0
    fi
    sleep 1
  done
  log "still not so after ${seconds}s: $what ($* keeps failing)"
  return 1
}

# Cargo links with the system's C compiler, which rustup does not install.
ensure_linker() {
  command -v cc >/dev/null 2>&1 || apt_install gcc libc6-dev
}
