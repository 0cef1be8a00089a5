# shellcheck shell=sh
# Source me (bash, zsh or POSIX sh) after scripts/bootstrap:   . scripts/env.sh
# Puts the repo's tools and venv on PATH and points Pulumi at this checkout's file backend,
# passphrase file and PULUMI_HOME (whose plugin cache holds pulumi-resource-command). Never logs in.
#
# Sourcing it again from another checkout switches the shell to that checkout: the values env.sh set
# for the previous one (NATS_FLY_ROOT says which) are replaced, and its PATH entries dropped. Values
# of your own (PULUMI_BACKEND_URL, PULUMI_CONFIG_PASSPHRASE[_FILE], PULUMI_HOME set by you) are kept,
# and env.sh says so on stderr when they differ from this checkout's.

if [ -n "${BASH_SOURCE:-}" ]; then
  _nf_env=$BASH_SOURCE
elif [ -n "${ZSH_VERSION:-}" ]; then
  # shellcheck disable=SC2296
  eval '_nf_env=${(%):-%x}'
elif [ -f scripts/env.sh ]; then
  _nf_env=scripts/env.sh   # plain sh cannot tell which file it sources: assume the cwd is the repo
else
  echo "env.sh: source it from the repo root (or use bash/zsh)" >&2
  return 1 2>/dev/null || exit 1
fi
_nf_prev=${NATS_FLY_ROOT:-}
NATS_FLY_ROOT=$(cd "$(dirname "$_nf_env")/.." && pwd -P)
export NATS_FLY_ROOT
unset _nf_env

# PATH: drop the previous checkout's entries, then put this checkout's first.
if [ -n "$_nf_prev" ] && [ "$_nf_prev" != "$NATS_FLY_ROOT" ]; then
  _nf_path=
  _nf_rest=$PATH:
  while [ -n "$_nf_rest" ]; do   # no IFS splitting: zsh does not split unquoted words
    _nf_dir=${_nf_rest%%:*}
    _nf_rest=${_nf_rest#*:}
    case $_nf_dir in
      "$_nf_prev/.venv/bin" | "$_nf_prev/.tools/bin") ;;
      *) _nf_path=${_nf_path:+$_nf_path:}$_nf_dir ;;
    esac
  done
  PATH=$_nf_path
  unset _nf_path _nf_rest
fi
for _nf_dir in "$NATS_FLY_ROOT/.venv/bin" "$NATS_FLY_ROOT/.tools/bin"; do
  case ":$PATH:" in
    *":$_nf_dir:"*) ;;
    *) PATH=$_nf_dir:$PATH ;;
  esac
done
unset _nf_dir
export PATH

# _nf_set NAME OURS PREVIOUS: NAME=OURS when NAME is unset or empty, or still holds the value env.sh
# set for the previous checkout (PREVIOUS); otherwise the value is yours: keep it, and say so when
# it differs from this checkout's.
_nf_set() {
  eval "_nf_cur=\${$1:-}"
  # shellcheck disable=SC2154
  if [ -z "$_nf_cur" ] || { [ -n "$3" ] && [ "$_nf_cur" = "$3" ]; }; then
    eval "$1=\$2"
  elif [ "$_nf_cur" != "$2" ]; then
    echo "env.sh: keeping your $1=$_nf_cur (this checkout's would be $2)" >&2
  fi
  eval "export $1"
  unset _nf_cur
}

_nf_old_state=
[ -n "$_nf_prev" ] && _nf_old_state=$_nf_prev/.pulumi-state
_nf_set PULUMI_BACKEND_URL "file://$NATS_FLY_ROOT/.pulumi-state" "${_nf_old_state:+file://$_nf_old_state}"
if [ -n "${PULUMI_CONFIG_PASSPHRASE+x}" ]; then
  echo "env.sh: keeping your PULUMI_CONFIG_PASSPHRASE (this checkout's passphrase file is" \
    "$NATS_FLY_ROOT/.pulumi-state/passphrase)" >&2
else
  _nf_set PULUMI_CONFIG_PASSPHRASE_FILE "$NATS_FLY_ROOT/.pulumi-state/passphrase" \
    "${_nf_old_state:+$_nf_old_state/passphrase}"
fi
_nf_set PULUMI_HOME "$NATS_FLY_ROOT/.pulumi-state/home" "${_nf_old_state:+$_nf_old_state/home}"
unset _nf_prev _nf_old_state
unset -f _nf_set

PULUMI_SKIP_UPDATE_CHECK=true
PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_SKIP_UPDATE_CHECK PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION
