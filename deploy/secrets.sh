#!/usr/bin/env bash
# Writes the secrets compose.yaml reads as files (once; never committed): a random PostgreSQL
# password and the database URL that carries it.
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
if [ -s secrets/postgres_password ]; then
  echo "deploy/secrets/ already holds a password; remove it to make new ones" >&2
  exit 1
fi
password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s' "$password" > secrets/postgres_password
printf 'postgres://lodestar:%s@postgres:5432/lodestar' "$password" > secrets/database_url
echo "wrote deploy/secrets/postgres_password and deploy/secrets/database_url"
