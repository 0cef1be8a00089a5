# shellcheck shell=sh
# Source me (bash, zsh or POSIX sh) after scripts/bootstrap:   . scripts/env.sh
# Puts the repo's tools and venv on PATH and points Pulumi at the local file backend.
# Never logs in anywhere; values already set in the environment win (except PATH, which is prefixed).

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
NATS_FLY_ROOT=$(cd "$(dirname "$_nf_env")/.." && pwd -P)
export NATS_FLY_ROOT
unset _nf_env

for _nf_dir in "$NATS_FLY_ROOT/.venv/bin" "$NATS_FLY_ROOT/.tools/bin"; do
  case ":$PATH:" in
    *":$_nf_dir:"*) ;;
    *) PATH=$_nf_dir:$PATH ;;
  esac
done
unset _nf_dir
export PATH

: "${PULUMI_BACKEND_URL:=file://$NATS_FLY_ROOT/.pulumi-state}"
export PULUMI_BACKEND_URL
if [ -z "${PULUMI_CONFIG_PASSPHRASE+x}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE+x}" ]; then
  PULUMI_CONFIG_PASSPHRASE_FILE=$NATS_FLY_ROOT/.pulumi-state/passphrase
  export PULUMI_CONFIG_PASSPHRASE_FILE
fi
: "${PULUMI_HOME:=$NATS_FLY_ROOT/.pulumi-state/home}"
export PULUMI_HOME
PULUMI_SKIP_UPDATE_CHECK=true
PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_SKIP_UPDATE_CHECK PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION
