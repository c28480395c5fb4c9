# Shared by scripts/test, demo, package and release (sourced): installing packages as root, the
# project's Python venv in .venv, Cargo.toml's version and pinned cargo subcommands.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# .venv, made from the system's Python: the ordinary-user tests run the venv's Python as a
# second user, and an interpreter under root's home (pyenv's, say) is closed to them. A venv
# made from such an interpreter is made again.
venv() {
  [ -x /usr/bin/python3 ] || apt_install python3
  if [ ! -x .venv/bin/python ] || [[ "$(readlink -f .venv/bin/python)" == /root/* ]]; then
    rm -rf .venv
    /usr/bin/python3 -m venv .venv 2>/dev/null \
      || { apt_install python3-venv; rm -rf .venv; /usr/bin/python3 -m venv .venv; }
  fi
}

# Cargo.toml's version, the only place it is written.
cargo_version() { sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1; }

# The release's file names (in dist/ and dist/release/), from Cargo.toml's version.
wheel_file() { echo "npzfs-$(cargo_version)-py3-none-manylinux_2_28_x86_64.whl"; }
deb_file() { echo "npzfs_$(cargo_version)_amd64.deb"; }

# cargo_tool NAME VERSION [cargo install flags]: a cargo subcommand at a pinned version,
# installed (into cargo's bin directory) when missing or at another version.
cargo_tool() {
  local name=$1 want=$2
  shift 2
  if [ "$(cargo "${name#cargo-}" --version 2>/dev/null | awk '{print $NF}')" != "$want" ]; then
    cargo install --quiet --locked "$name@$want" "$@"
  fi
}
